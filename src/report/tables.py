"""Sweep dirs -> the paper's Table 2 (``table.md``, ``table.csv``) and Figures 2-7 (``src.report.figures``).

    python -m src.report SWEEP_DIR [SWEEP_DIR ...] [--out DIR] [--alpha 0.05]

Every ``metrics.json`` under the given dirs is one run; ``src.report.runs`` groups them by dataset × depth × settings
× method × position × case. Only runs whose status is ``finished`` count; failed, unfinished (still running,
or killed) and unreadable ones are listed and flagged. Mean ± std are over seeds, with the sample standard
deviation (ddof=1); every Δ has its 95 % t-interval, p-value and verdict (``src.report.rows``, ``src.report.stats``). With
methods other than the paper's HAL (or the block at another stage) the table gains the columns that compare
them fairly (``METHOD_NOTES``). docs/report.md explains every column.
"""
import argparse
import csv
import math
import os
import sys
from pathlib import Path
from typing import Optional

from src.run.errors import exit_code
from src.report.figures import write_figures
from src.report.paper import PAPER_DEPTH
from src.report.rows import ALPHA, COLUMNS, EXPECTED_SEEDS, table_rows
from src.report.runs import DEFAULT_POSITION, Group, ReportError, Run, group_runs, load_runs  # noqa: F401 (API)

METHOD_NOTES = [
    "method, position, case: the method (hal = the paper's auxiliary block, or the plain network with case "
    "baseline), the stage the block follows (3 = the paper's place) and the Table 1 superclasses used.",
    "oracle: test error with the true superclass fed to the block (the paper's protocol); for methods "
    "without the block, their plain test error.",
    "inferred: test error with no hint, the block trying every superclass and keeping the most confident.",
    "superclass acc: % of test images whose predicted class lies in the true superclass.",
    "within-superclass mistakes: % of the errors that still fall inside the true superclass.",
    "hierarchy_mean_corr and hierarchy_rf: mean correlation between the learned and the true class "
    "hierarchy, and Robinson-Foulds distance between their trees (lower = closer).",
    "img/s vs baseline: training throughput as the ratio of the mean images per second to the baseline's; "
    "given only between runs of one sweep dir, and it depends on the machine's load while they ran.",
    "FLOPs / train image (where runs recorded it): floating-point operations of one training image.",
    "params vs baseline: trainable parameters while training / at inference, and the change against the "
    "baseline in brackets.",
]
FAIR_NOTE = (
    "masked: test error when predicting only among the classes of the true superclass; it is the fair "
    "yardstick for the oracle protocol because it gives the plain network the same test-time hint "
    "(rows without the block list it for every case they were scored on). "
    "fair Δ: a block row's oracle error minus the baseline's masked error for the same case "
    "(negative = the block beats the same hint given to the plain network); empty for rows without the block.")


def methods_shown(groups: list[Group]) -> bool:
    """Whether the table needs the method columns: another method, or the block at another stage."""
    return any(g.method != "hal" or g.position != DEFAULT_POSITION for g in groups)


def _fmt(mean: float, std: float, digits: int = 2) -> str:
    if mean is None or math.isnan(mean):
        return ""
    return f"{mean:.{digits}f}" + ("" if std is None or math.isnan(std) else f" ± {std:.{digits}f}")


def _signed(value: Optional[float]) -> str:
    return "" if value is None or math.isnan(value) else f"{value:+.2f}"


def delta_cell(r: dict, value: str, prefix: str, short: str) -> str:
    """``-0.78 [-1.02, -0.54] better (p=0.004, Holm 0.012, paired)``; for ``no evidence`` also the seeds at
    which a paired test would have 80 % power; ``(no p)`` for one seed or zero variance."""
    if r[value] is None or math.isnan(r[value]):
        return ""
    text = _signed(r[value])
    if r[f"{prefix}_ci_low"] is not None:
        text += f" [{r[f'{prefix}_ci_low']:+.2f}, {r[f'{prefix}_ci_high']:+.2f}]"
    text += f" {r[f'{short}verdict']}"
    if r[f"{prefix}_p"] is None:
        return text + " (no p)"
    details = f"p={r[f'{prefix}_p']:.3g}, Holm {r[f'{prefix}_p_holm']:.3g}, {r[f'{short}test']}"
    needed = r[f"{short}seeds_needed"]
    return text + f" ({details}" + (f"; needs {needed} seeds" if needed is not None else "") + ")"


def _optimizer(config: dict[str, str]) -> str:
    """``SGD(lr=1.0, momentum=0.0, ...)`` from a flattened config."""
    args = [f"{k.removeprefix('optimizer.')}={v}" for k, v in sorted(config.items())
            if k.startswith("optimizer.") and k not in ("optimizer._target_", "optimizer._partial_")]
    return f"{config['optimizer._target_'].rsplit('.', 1)[-1]}({', '.join(args)})"


def recipe_note(runs: list[Run]) -> str:
    """One line on the counted runs' gradient clipping and optimiser: the paper has no clipping and names no
    optimiser (docs/configuration.md, "Choices the paper leaves open"). Empty without ``.hydra/config.yaml``."""
    configs = [r.config for r in runs if r.finished and r.config]
    clips = sorted({c["trainer.gradient_clip_val"] for c in configs if "trainer.gradient_clip_val" in c})
    optimizers = sorted({_optimizer(c) for c in configs if "optimizer._target_" in c})
    parts = []
    if clips:
        parts.append(f"gradient clipping `trainer.gradient_clip_val={' / '.join(clips)}` (the paper has none)")
    if optimizers:
        parts.append(f"optimiser `{' / '.join(optimizers)}` (the paper names none)")
    return f"Recipe beyond the paper (docs/configuration.md, \"Choices the paper leaves open\"): {'; '.join(parts)}." if parts else ""


def _cell(r: dict, name: str, digits: int = 2) -> str:
    return _fmt(r.get(f"{name}_mean", math.nan), r.get(f"{name}_std", math.nan), digits)


def _masked(r: dict) -> str:
    """The masked error of each case the row's runs were scored on; just the number for the row's own case."""
    cases = [k[len("test_error_masked."):-len("_mean")] for k, v in r.items()
             if k.startswith("test_error_masked.") and k.endswith("_mean") and not math.isnan(v)]
    if cases == [r["case"]]:
        return _cell(r, f"test_error_masked.{r['case']}")
    return "; ".join(f"{c} {_cell(r, f'test_error_masked.{c}')}" for c in cases)


def _params(r: dict) -> str:
    train, inference = r.get("params_train_mean", math.nan), r.get("params_inference_mean", math.nan)
    if math.isnan(train) and math.isnan(inference):
        return ""
    text = " / ".join("" if math.isnan(v) else f"{v:,.0f}" for v in (train, inference))
    deltas = [r["params_train_vs_baseline"], r["params_inference_vs_baseline"]]
    if all(math.isnan(d) for d in deltas) or (r["method"] == "hal" and r["case"] == "baseline"):
        return text
    return text + " (" + " / ".join("" if math.isnan(d) else f"{d:+,.0f}" for d in deltas) + ")"


def _flops(r: dict) -> str:
    value = r.get("flops_per_train_image_mean", math.nan)
    return "" if math.isnan(value) else f"{value:.3g}"


def markdown(rows: list[dict], runs: list[Run], methods: bool = False, alpha: float = ALPHA) -> str:
    """The table; ``methods``: the columns that compare methods (``METHOD_NOTES``) instead of the paper's."""
    shown = [c for c in COLUMNS if (methods or c.table2) and any(f"{c.measure}_mean" in r for r in rows)]
    flops = any(not math.isnan(r.get("flops_per_train_image_mean", math.nan)) for r in rows)
    show_settings = len({r["settings"] for r in rows}) > 1
    error = "test error % (mean ± std, n seeds)"
    delta, fair = "Δ vs baseline [95 % CI] verdict", "fair Δ [95 % CI] verdict"
    first = ["method", "position", "case", f"oracle {error}", delta] if methods else \
        ["case", error, delta, "paper", "paper Δ"]
    last = (["img/s vs baseline"] + (["FLOPs / train image"] if flops else []) +
            ["params train / inference (vs baseline)"]) if methods else []
    header = ["dataset", "depth"] + (["settings"] if show_settings else []) + first + ["masked %", fair] + \
        [c.header for c in shown] + last + ["epochs", "flags"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        error_cell = f"{_fmt(r['test_error_mean'], r['test_error_std'])} (n={r['n']})" if r["n"] else "(n=0)"
        delta_text = delta_cell(r, "delta_vs_baseline", "delta", "")
        if methods:
            cells = [r["method"], str(r["position"]), r["case"], error_cell, delta_text]
        else:
            paper = _fmt(r["paper_test_error"], r["paper_test_error_std"]) if r["paper_test_error"] is not None else ""
            cells = [r["case"], error_cell, delta_text, paper, _signed(r["paper_delta_vs_baseline"])]
        cells += [_masked(r), delta_cell(r, "fair_delta", "fair_delta", "fair_")]
        cells += [_cell(r, c.measure, c.digits) for c in shown]
        if methods:
            ratio = r["train_images_per_s_vs_baseline"]
            cells += ["" if math.isnan(ratio) else f"{ratio:.2f}×"] + ([_flops(r)] if flops else []) + [_params(r)]
        cells = [r["dataset"], str(r["depth"])] + ([r["settings"] or "(none)"] if show_settings else []) + cells
        lines.append("| " + " | ".join(cells + [r["epochs"], r["flags"]]) + " |")
    return "\n".join(lines + _notes(rows, runs, methods, alpha)) + "\n"


def _notes(rows: list[dict], runs: list[Run], methods: bool, alpha: float) -> list[str]:
    note = recipe_note(runs)
    tested = [sum(r[f"{p}_p"] is not None for r in rows) for p in ("delta", "fair_delta")]
    paper = (f"paper: Table 2 of the paper (5 runs), shown at its depths "
             f"({', '.join(f'{d} {k}' for k, d in PAPER_DEPTH.items())}). ")
    notes = (["", note] if note else []) + [
        "",
        ("Test error with the final weights and the true superclass fed (the paper's protocol). " if not methods
         else "") +
        "mean ± std over seeds; std is the sample standard deviation (ddof=1), empty for one seed. "
        "Δ: change of the mean against the baseline of the same dataset, depth and settings "
        f"(negative = fewer errors). {'' if methods else paper}{FAIR_NOTE} "
        "[95 % CI]: Student-t interval of the difference; paired by seed (mean of the per-seed differences, "
        "paired t-test) where both rows have the same seeds, else Welch's test (the `test` column of table.csv). "
        f"Verdict: better / worse where the Holm-corrected p is at most α = {alpha:g}, across the "
        f"{tested[0]} Δs and, separately, the {tested[1]} fair Δs of this table; else no evidence, with the "
        "seeds at which a paired t-test would have 80 % power for the observed difference and sd "
        "(docs/report.md, \"Reading the report\"). "
        f"Flags: n<{EXPECTED_SEEDS} (fewer seeds than the paper), failed and unfinished runs "
        "(not counted in the means), no interval (one seed or zero variance).",
    ]
    if any(f"{c}_mean" in r for r in rows for c in ("test_error_crm", "mistake_severity")):
        notes += ["", "CRM, mistake severity, HD@k, ECE: scored on each run's `hierarchy_name` tree with the metrics "
                  "protocol (docs/hierarchy.md): CRM = the class of least expected tree distance under the softmax "
                  "(no hint); severity and HD@k in LCA heights (lower = better mistakes); ECE a fraction."]
    if methods:
        notes += [""] + [f"- {n}" for n in METHOD_NOTES]
    evaluated = sum(r.evaluated for r in runs if r.finished)
    if evaluated:
        notes += ["", f"{evaluated} counted runs have an eval.json (python -m src.eval): its metrics replace "
                      "those of their metrics.json."]
    problems = [r for r in runs if not r.finished]
    if problems:
        notes += ["", "Runs not counted:", ""]
        for r in sorted(problems, key=lambda r: str(r.dir)):
            reason = r.problem or r.record.get("error",
                                               "unfinished: still running, or killed (re-run the sweep to resume it)")
            notes.append(f"- `{r.dir}` ({r.status}): {reason}")
    return notes


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["dataset", "depth", "case", "n"])
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                             for k, v in r.items()})


def report(sweep_dirs: list[Path], out: Optional[Path] = None, alpha: float = ALPHA) -> dict:
    """Write table.md, table.csv and the figures to ``out`` (default: the sweep dir, or the common parent
    of several). Returns {"rows", "markdown", "figures"}."""
    if not 0 < alpha < 1:
        raise ReportError(f"--alpha must lie between 0 and 1, not {alpha:g}")
    runs = load_runs(sweep_dirs)
    groups = group_runs(runs)
    rows = table_rows(groups, alpha)
    if out is None:
        out = sweep_dirs[0] if len(sweep_dirs) == 1 else Path(
            os.path.commonpath([str(p.resolve()) for p in sweep_dirs]))
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(rows, runs, methods_shown(groups), alpha)
    (out / "table.md").write_text(md)
    write_csv(rows, out / "table.csv")
    figures = write_figures(groups, rows, out, md)
    return {"rows": rows, "markdown": md, "figures": figures, "out": out}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.report", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dirs", nargs="+", type=Path, metavar="SWEEP_DIR")
    parser.add_argument("--out", type=Path, default=None,
                        help="where table.md, table.csv, the PNGs and tb/ go (default: the sweep dir, or the "
                             "common parent of several)")
    parser.add_argument("--alpha", type=float, default=ALPHA,
                        help=f"family-wise error rate of the verdicts, Holm-corrected per table (default {ALPHA})")
    args = parser.parse_args(argv)
    try:
        result = report(args.sweep_dirs, args.out, args.alpha)
    except Exception as e:
        return exit_code(e)
    print(result["markdown"])
    print(f"wrote {result['out'] / 'table.md'}, table.csv and {len(result['figures'])} figures "
          f"({', '.join(p.name for p in result['figures'])}); TensorBoard: .venv/bin/tensorboard --logdir {result['out'] / 'tb'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
