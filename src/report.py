"""Sweep dirs -> the paper's Table 2 (``table.md``, ``table.csv``) and Figures 2-7 (``src.figures``).

    python -m src.report SWEEP_DIR [SWEEP_DIR ...] [--out DIR]

Every ``metrics.json`` under the given dirs is one run. Runs are grouped by dataset × depth × case, and by
"settings": the values of the composed config (``.hydra/config.yaml``) in which the runs of a dataset and
depth differ, so that runs made with different settings are never averaged together. Only runs whose
status is ``finished`` count; failed and unfinished ones (still running, or killed) are listed and
flagged. Mean ± std are over seeds, with the sample standard deviation (ddof=1).
"""
import argparse
import csv
import json
import math
import os
import sys
from pathlib import Path
from typing import Optional

from src.errors import exit_code
from src.figures import write_figures
from src.paper import PAPER_DEPTH, PAPER_TABLE2
from src.runs import Group, ReportError, Run, group_runs, load_runs, natural  # noqa: F401 (ReportError: API)

# Written by the test protocols when present (%), shown as mean ± std beside test_error.
OPTIONAL_COLUMNS = ["test_error_inferred", "test_error_shuffled", "superclass_acc", "within_superclass_mistakes"]
EXPECTED_SEEDS = 5


def _fmt(mean: float, std: float, digits: int = 2) -> str:
    if math.isnan(mean):
        return ""
    return f"{mean:.{digits}f}" + ("" if std is None or math.isnan(std) else f" ± {std:.{digits}f}")


def _signed(value: Optional[float]) -> str:
    return "" if value is None or math.isnan(value) else f"{value:+.2f}"


def table_rows(groups: list[Group]) -> list[dict]:
    """One dict per group: every number of the table, unformatted (the CSV), plus flags."""
    baselines = {(g.dataset, g.depth, g.settings): g.stats("test_error")[0] for g in groups if g.case == "baseline"}
    present = [c for c in OPTIONAL_COLUMNS if any(g.stats(c)[2] for g in groups)]
    rows = []
    for g in groups:
        mean, std, n = g.stats("test_error")
        base = baselines.get((g.dataset, g.depth, g.settings), math.nan)
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
               "seeds": " ".join(str(s) for s in sorted(seeds, key=natural)),
               "epochs": " ".join(str(e) for e in epochs),
               "test_error_mean": mean, "test_error_std": std,
               "delta_vs_baseline": mean - base if g.case != "baseline" else math.nan,
               "paper_test_error": paper_mean, "paper_test_error_std": paper_std,
               "paper_delta_vs_baseline": paper_delta}
        for c in present:
            row[f"{c}_mean"], row[f"{c}_std"], _ = g.stats(c)
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


def markdown(rows: list[dict], runs: list[Run]) -> str:
    optional = [c for c in OPTIONAL_COLUMNS if f"{c}_mean" in (rows[0] if rows else {})]
    show_settings = len({r["settings"] for r in rows}) > 1
    header = ["dataset", "depth"] + (["settings"] if show_settings else []) + [
        "case", "test error % (mean ± std, n seeds)", "Δ vs baseline", "paper", "paper Δ"] + \
        [f"{c} %" for c in optional] + ["epochs", "flags"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["dataset"], str(r["depth"])] + ([r["settings"] or "(none)"] if show_settings else []) + [
            r["case"],
            f"{_fmt(r['test_error_mean'], r['test_error_std'])} (n={r['n']})" if r["n"] else "(n=0)",
            _signed(r["delta_vs_baseline"]),
            _fmt(r["paper_test_error"], r["paper_test_error_std"]) if r["paper_test_error"] is not None else "",
            _signed(r["paper_delta_vs_baseline"])] + \
            [_fmt(r[f"{c}_mean"], r[f"{c}_std"]) for c in optional] + [r["epochs"], r["flags"]]
        lines.append("| " + " | ".join(cells) + " |")
    note = recipe_note(runs)
    notes = (["", note] if note else []) + [
        "",
        "Test error with the final weights and the true superclass fed (the paper's protocol). "
        "mean ± std over seeds; std is the sample standard deviation (ddof=1), empty for one seed. "
        "Δ: change of the mean against the baseline of the same dataset, depth and settings "
        f"(negative = fewer errors). paper: Table 2 of the paper (5 runs), shown at its depths "
        f"({', '.join(f'{d} {k}' for k, d in PAPER_DEPTH.items())}). "
        f"Flags: n<{EXPECTED_SEEDS} (fewer seeds than the paper), failed and unfinished runs "
        "(not counted in the means).",
    ]
    problems = [r for r in runs if not r.finished]
    if problems:
        notes += ["", "Runs not counted:", ""]
        for r in sorted(problems, key=lambda r: str(r.dir)):
            reason = r.record.get("error", "unfinished: still running, or killed (re-run the sweep to resume it)")
            notes.append(f"- `{r.dir}` ({r.status}): {reason}")
    return "\n".join(lines + notes) + "\n"


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
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
    md = markdown(rows, runs)
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
