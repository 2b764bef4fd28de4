"""Sweep dirs -> the paper's Table 2 (``table.md``, ``table.csv``) and Figures 2-7 (``src.figures``).

    python -m src.report SWEEP_DIR [SWEEP_DIR ...] [--out DIR]

Every ``metrics.json`` under the given dirs is one run; ``src.runs`` groups them by dataset × depth × settings
× method × position × case. Only runs whose status is ``finished`` count; failed, unfinished (still running,
or killed) and unreadable ones are listed and flagged. Mean ± std are over seeds, with the sample standard
deviation (ddof=1). With methods other than the paper's HAL (or the block at another stage) the table gains
the columns that compare them fairly (``METHOD_NOTES``).
"""
import argparse
import csv
import math
import os
import sys
from pathlib import Path
from typing import Optional

from src.errors import exit_code
from src.figures import write_figures
from src.paper import PAPER_DEPTH, PAPER_TABLE2
from src.runs import DEFAULT_POSITION, Group, ReportError, Run, group_runs, load_runs, natural, numbers  # noqa: F401 (ReportError: API)

# Written by the test protocols when present (%), shown as mean ± std beside test_error.
OPTIONAL_COLUMNS = ["test_error_inferred", "test_error_shuffled", "superclass_acc", "within_superclass_mistakes"]
# The field's mistake metrics and CRM (docs/hierarchy.md), shown where runs have them: (field, header, digits).
MISTAKE_COLUMNS = [("test_error_crm", "CRM %", 2), ("mistake_severity", "mistake severity", 3),
                   ("hierarchical_distance.1", "HD@1", 3), ("hierarchical_distance.5", "HD@5", 3),
                   ("hierarchical_distance.20", "HD@20", 3), ("ece", "ECE", 3)]
EXPECTED_SEEDS = 5
# Record fields that describe a run rather than measure it: not averaged into the CSV.
NOT_MEASURES = {"seed", "depth", "epochs", "position", "test_error"}
METHOD_NOTES = [
    "method, position, case: the method (hal = the paper's auxiliary block, or the plain network with case "
    "baseline), the stage the block follows (3 = the paper's place) and the Table 1 superclasses used.",
    "oracle: test error with the true superclass fed to the block (the paper's protocol); for methods "
    "without the block, their plain test error.",
    "inferred: test error with no hint, the block trying every superclass and keeping the most confident.",
    "masked: test error when predicting only among the classes of the true superclass; it is the fair "
    "yardstick for the oracle protocol because it gives the plain network the same test-time hint "
    "(rows without the block list it for every case they were scored on).",
    "fair Δ: a block row's oracle error minus the baseline's masked error for the same case "
    "(negative = the block beats the same hint given to the plain network); empty for rows without the block.",
    "superclass acc: % of test images whose predicted class lies in the true superclass.",
    "within-superclass mistakes: % of the errors that still fall inside the true superclass.",
    "hierarchy_mean_corr and hierarchy_rf: mean correlation between the learned and the true class "
    "hierarchy, and Robinson-Foulds distance between their trees (lower = closer).",
    "img/s vs baseline: training throughput as the ratio of the mean images per second to the baseline's.",
    "params vs baseline: trainable parameters while training / at inference, and the change against the "
    "baseline in brackets.",
]


def _fmt(mean: float, std: float, digits: int = 2) -> str:
    if math.isnan(mean):
        return ""
    return f"{mean:.{digits}f}" + ("" if std is None or math.isnan(std) else f" ± {std:.{digits}f}")


def _signed(value: Optional[float]) -> str:
    return "" if value is None or math.isnan(value) else f"{value:+.2f}"


def _baselines(groups: list[Group]) -> dict[tuple, Group]:
    """(dataset, depth, settings[, position]) -> the plain network's group (method hal, case baseline)."""
    found = {}
    for g in sorted((g for g in groups if g.is_baseline), key=lambda g: g.position != DEFAULT_POSITION):
        found.setdefault((g.dataset, g.depth, g.settings), g)
        found.setdefault((g.dataset, g.depth, g.settings, g.position), g)
    return found


def methods_shown(groups: list[Group]) -> bool:
    """Whether the table needs the method columns: another method, or the block at another stage."""
    return any(g.method != "hal" or g.position != DEFAULT_POSITION for g in groups)


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def table_rows(groups: list[Group]) -> list[dict]:
    """One dict per group: every number of the table, unformatted (the CSV), plus flags."""
    baselines = _baselines(groups)
    present = [c for c in OPTIONAL_COLUMNS if any(g.stats(c)[2] for g in groups)]
    extra = {}
    for g in groups:
        for r in g.finished:
            extra.update({k: v for k, v in numbers(r.record).items() if k not in NOT_MEASURES and k not in present})
    rows = []
    for g in groups:
        mean, std, n = g.stats("test_error")
        base = baselines.get((g.dataset, g.depth, g.settings, g.position)) or \
            baselines.get((g.dataset, g.depth, g.settings))
        paper_mean, paper_std = g.paper()
        paper_delta = None
        if paper_mean is not None and g.case != "baseline":
            paper_delta = paper_mean - PAPER_TABLE2[g.dataset]["baseline"][0]
        seeds = [r.record.get("seed") for r in g.finished]
        failed = [r for r in g.runs if r.status == "failed"]
        unfinished = [r for r in g.runs if not r.finished and r.status != "failed"]
        epochs = sorted({r.record.get("epochs") for r in g.finished}, key=natural)
        flags = []
        if n < EXPECTED_SEEDS:
            flags.append(f"n<{EXPECTED_SEEDS}")
        if failed:
            flags.append(f"{len(failed)} failed")
        if unfinished:
            flags.append(f"{len(unfinished)} unfinished")
        if len(set(seeds)) < len(seeds):
            flags.append("repeated seeds")
        if len(epochs) > 1:
            flags.append("mixed epochs")
        row = {"dataset": g.dataset, "depth": g.depth, "settings": g.settings, "case": g.case, "n": n,
               "method": g.method, "position": g.position,
               "seeds": " ".join(str(s) for s in sorted(seeds, key=natural)),
               "epochs": " ".join(str(e) for e in epochs),
               "test_error_mean": mean, "test_error_std": std,
               "delta_vs_baseline": mean - base.stats("test_error")[0] if base and not g.is_baseline else math.nan,
               "paper_test_error": paper_mean, "paper_test_error_std": paper_std,
               "paper_delta_vs_baseline": paper_delta}
        for c in present:
            row[f"{c}_mean"], row[f"{c}_std"], _ = g.stats(c)
        row["fair_delta"] = mean - base.stats("test_error_masked", g.case)[0] if base and g.has_block else math.nan
        for name in ("train_images_per_s", "params_train", "params_inference"):
            mine, theirs = g.stats(name)[0], base.stats(name)[0] if base else math.nan
            row[f"{name}_vs_baseline"] = _ratio(mine, theirs) if name == "train_images_per_s" else mine - theirs
        for name, (key, sub) in sorted(extra.items()):
            row[f"{name}_mean"], row[f"{name}_std"], _ = g.stats(key, sub)
        row.update(failed=len(failed), unfinished=len(unfinished), flags="; ".join(flags))
        rows.append(row)
    return rows


def _optimizer(config: dict[str, str]) -> str:
    """``SGD(lr=1.0, momentum=0.0, ...)`` from a flattened config."""
    args = [f"{k.removeprefix('optimizer.')}={v}" for k, v in sorted(config.items())
            if k.startswith("optimizer.") and k not in ("optimizer._target_", "optimizer._partial_")]
    return f"{config['optimizer._target_'].rsplit('.', 1)[-1]}({', '.join(args)})"


def recipe_note(runs: list[Run]) -> str:
    """One line on the counted runs' gradient clipping and optimiser: the paper has no clipping and names no
    optimiser (README, "Choices the paper leaves open"). Empty without ``.hydra/config.yaml``."""
    configs = [r.config for r in runs if r.finished and r.config]
    clips = sorted({c["trainer.gradient_clip_val"] for c in configs if "trainer.gradient_clip_val" in c})
    optimizers = sorted({_optimizer(c) for c in configs if "optimizer._target_" in c})
    parts = []
    if clips:
        parts.append(f"gradient clipping `trainer.gradient_clip_val={' / '.join(clips)}` (the paper has none)")
    if optimizers:
        parts.append(f"optimiser `{' / '.join(optimizers)}` (the paper names none)")
    return f"Recipe beyond the paper (README, \"Choices the paper leaves open\"): {'; '.join(parts)}." if parts else ""


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


def _method_cells(r: dict) -> list[str]:
    ratio = r["train_images_per_s_vs_baseline"]
    return [_cell(r, "test_error_inferred"), _masked(r), _signed(r["fair_delta"]), _cell(r, "superclass_acc"),
            _cell(r, "within_superclass_mistakes"), _cell(r, "hierarchy_mean_corr", 3), _cell(r, "hierarchy_rf"),
            "" if math.isnan(ratio) else f"{ratio:.2f}×", _params(r)]


def markdown(rows: list[dict], runs: list[Run], methods: bool = False) -> str:
    """The table; ``methods``: the columns that compare methods (``METHOD_NOTES``) instead of the paper's."""
    optional = [c for c in OPTIONAL_COLUMNS if f"{c}_mean" in (rows[0] if rows else {})]
    mistakes = [c for c in MISTAKE_COLUMNS if any(not math.isnan(r.get(f"{c[0]}_mean", math.nan)) for r in rows)]
    show_settings = len({r["settings"] for r in rows}) > 1
    error = "test error % (mean ± std, n seeds)"
    if methods:
        columns = ["method", "position", "case", f"oracle {error}", "Δ vs baseline", "inferred %", "masked %",
                   "fair Δ", "superclass acc %", "within-superclass mistakes %", "hierarchy_mean_corr",
                   "hierarchy_rf", "img/s vs baseline", "params train / inference (vs baseline)"]
    else:
        columns = ["case", error, "Δ vs baseline", "paper", "paper Δ"] + [f"{c} %" for c in optional]
    # beside the protocols: after fair Δ in the methods table, at the end of the paper's
    at = columns.index("fair Δ") + 1 if methods else len(columns)
    columns[at:at] = [header for _, header, _ in mistakes]
    header = ["dataset", "depth"] + (["settings"] if show_settings else []) + columns + ["epochs", "flags"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        error_cell = f"{_fmt(r['test_error_mean'], r['test_error_std'])} (n={r['n']})" if r["n"] else "(n=0)"
        if methods:
            cells = [r["method"], str(r["position"]), r["case"], error_cell, _signed(r["delta_vs_baseline"])] + \
                _method_cells(r)
        else:
            cells = [r["case"], error_cell, _signed(r["delta_vs_baseline"]),
                     _fmt(r["paper_test_error"], r["paper_test_error_std"]) if r["paper_test_error"] is not None
                     else "", _signed(r["paper_delta_vs_baseline"])] + \
                [_fmt(r[f"{c}_mean"], r[f"{c}_std"]) for c in optional]
        cells[at:at] = [_cell(r, name, digits) for name, _, digits in mistakes]
        cells = [r["dataset"], str(r["depth"])] + ([r["settings"] or "(none)"] if show_settings else []) + cells
        lines.append("| " + " | ".join(cells + [r["epochs"], r["flags"]]) + " |")
    note = recipe_note(runs)
    paper = (f"paper: Table 2 of the paper (5 runs), shown at its depths "
             f"({', '.join(f'{d} {k}' for k, d in PAPER_DEPTH.items())}). ")
    notes = (["", note] if note else []) + [
        "",
        ("Test error with the final weights and the true superclass fed (the paper's protocol). " if not methods
         else "") +
        "mean ± std over seeds; std is the sample standard deviation (ddof=1), empty for one seed. "
        "Δ: change of the mean against the baseline of the same dataset, depth and settings "
        f"(negative = fewer errors). {'' if methods else paper}"
        f"Flags: n<{EXPECTED_SEEDS} (fewer seeds than the paper), failed and unfinished runs "
        "(not counted in the means).",
    ]
    if mistakes:
        notes += ["", f"{', '.join(h for _, h, _ in mistakes)}: scored on each run's `hierarchy_name` tree with the "
                  "metrics protocol (docs/hierarchy.md): CRM = the class of least expected tree distance under the "
                  "softmax (no hint); severity and HD@k in LCA heights (lower = better mistakes); ECE a fraction."]
    if methods:
        notes += [""] + [f"- {n}" for n in METHOD_NOTES]
    problems = [r for r in runs if not r.finished]
    if problems:
        notes += ["", "Runs not counted:", ""]
        for r in sorted(problems, key=lambda r: str(r.dir)):
            reason = r.problem or r.record.get("error",
                                               "unfinished: still running, or killed (re-run the sweep to resume it)")
            notes.append(f"- `{r.dir}` ({r.status}): {reason}")
    return "\n".join(lines + notes) + "\n"


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["dataset", "depth", "case", "n"])
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                             for k, v in r.items()})


def report(sweep_dirs: list[Path], out: Optional[Path] = None) -> dict:
    """Write table.md, table.csv and the figures to ``out`` (default: the sweep dir, or the common parent
    of several). Returns {"rows", "markdown", "figures"}."""
    runs = load_runs(sweep_dirs)
    groups = group_runs(runs)
    rows = table_rows(groups)
    if out is None:
        out = sweep_dirs[0] if len(sweep_dirs) == 1 else Path(
            os.path.commonpath([str(p.resolve()) for p in sweep_dirs]))
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(rows, runs, methods_shown(groups))
    (out / "table.md").write_text(md)
    write_csv(rows, out / "table.csv")
    figures = write_figures(groups, out, md)
    return {"rows": rows, "markdown": md, "figures": figures, "out": out}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.report", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dirs", nargs="+", type=Path, metavar="SWEEP_DIR")
    parser.add_argument("--out", type=Path, default=None,
                        help="where table.md, table.csv, the PNGs and tb/ go (default: the sweep dir, or the "
                             "common parent of several)")
    args = parser.parse_args(argv)
    try:
        result = report(args.sweep_dirs, args.out)
    except Exception as e:
        return exit_code(e)
    print(result["markdown"])
    print(f"wrote {result['out'] / 'table.md'}, table.csv and {len(result['figures'])} figures "
          f"({', '.join(p.name for p in result['figures'])}); TensorBoard: .venv/bin/tensorboard --logdir {result['out'] / 'tb'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
