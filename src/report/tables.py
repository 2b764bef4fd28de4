"""Sweep dirs -> short tables that answer one question each (``table.md``; every number in ``table.csv``),
the paper's Figures 2-7 (``src.report.figures``), the trade-off figure (``src.report.tradeoff``) and ``report.html``,
one self-contained page with all of them (``src.report.page``).

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
from src.report.mixed import mixed_notes, refuse_mixed_sweeps
from src.report.export import latex, method_label, write_long_csv
from src.report.paper import PAPER_DEPTH
from src.report.control import add_tree_columns, tree_tables
from src.report.page import page
from src.report.provenance import add_provenance, refuse_mixed_provenance
from src.report.questions import Table, question_tables
from src.report.questions import markdown as questions_markdown
from src.report.tradeoff import write_tradeoff
from src.report.rows import ALPHA, EXPECTED_SEEDS, table_rows
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
    if any(c.get("lr_rule") == "loss_scale" for c in configs):   # docs/methods.md, "One recipe per arm"
        parts.append("`lr_rule=loss_scale`: a method whose loss is N times smaller than cross-entropy's (HXE, soft "
                     "labels) trains at N times that LR, with the clipping threshold over N")
    return f"Recipe beyond the paper (docs/configuration.md, \"Choices the paper leaves open\"): {'; '.join(parts)}." if parts else ""


def markdown(rows: list[dict], runs: list[Run], methods: bool = False, alpha: float = ALPHA) -> str:
    """The question tables (``src.report.questions``; the random-tree control's where it has rows), then the
    notes; ``methods``: the layout that compares methods (``METHOD_NOTES``) instead of the paper's."""
    notes = _notes(rows, runs, methods, alpha)
    return questions_markdown(tables(rows, methods)) + "\n".join(["", "## Notes"] + notes) + "\n"


def tables(rows: list[dict], methods: bool) -> list[Table]:
    return question_tables(rows, methods, tree_tables(rows))


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
        f"Verdict: ✓ better / ✗ worse where the Holm-corrected p is at most α = {alpha:g}, across the "
        f"{tested[0]} Δs and, separately, the {tested[1]} fair Δs of this report; else no evidence, with the "
        "seeds at which a paired t-test would have 80 % power for the observed difference and sd in the line "
        "under the table (docs/report.md, \"Reading the report\"). table.csv has every number unrounded. "
        f"Flags: n<{EXPECTED_SEEDS} (fewer seeds than the paper), failed and unfinished runs "
        "(not counted in the means), no interval (one seed or zero variance).",
    ]
    if any(f"{c}_mean" in r for r in rows for c in ("test_error_crm", "mistake_severity")):
        notes += ["", "CRM, mistake severity, HD@k, ECE: scored on each run's `hierarchy_name` tree with the metrics "
                  "protocol (docs/hierarchy.md): CRM = the class of least expected tree distance under the softmax "
                  "(no hint); severity and HD@k in LCA heights (lower = better mistakes); ECE a fraction."]
    if methods:
        notes += [""] + [f"- {n}" for n in METHOD_NOTES]
    notes += [line for n in mixed_notes(runs) for line in ("", n)]
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
                             for k, v in {**r, **dict(zip(("method", "position"), method_label(r)))}.items()})


def report(sweep_dirs: list[Path], out: Optional[Path] = None, alpha: float = ALPHA, strict: bool = False,
           fmt: str = "markdown") -> dict:
    """Write table.md, table.csv and the figures to ``out`` (default: the sweep dir, or the common parent
    of several). Returns {"rows", "markdown", "figures"}. ``strict``: refuse (ReportError, nothing written)
    where the report would flag a row's mixed provenance (``src.report.provenance``)."""
    if not 0 < alpha < 1:
        raise ReportError(f"--alpha must lie between 0 and 1, not {alpha:g}")
    runs = load_runs(sweep_dirs)
    if strict:
        refuse_mixed_sweeps(runs)
    groups = group_runs(runs)
    rows = table_rows(groups, alpha)
    add_tree_columns(groups, rows, alpha)
    add_provenance(groups, rows)
    if strict and (why := refuse_mixed_provenance(rows)):
        raise ReportError(why)
    if out is None:
        out = sweep_dirs[0] if len(sweep_dirs) == 1 else Path(
            os.path.commonpath([str(p.resolve()) for p in sweep_dirs]))
    out.mkdir(parents=True, exist_ok=True)
    methods = methods_shown(groups)
    shown, notes = tables(rows, methods), _notes(rows, runs, methods, alpha)  # for the page
    md = markdown(rows, runs, methods, alpha)
    (out / "table.md").write_text(md)
    write_csv(rows, out / "table.csv")
    write_long_csv(rows, out / "table_long.csv")
    if fmt == "latex":
        (out / "table.tex").write_text(latex(shown))
    figures = write_figures(groups, rows, out, md) + write_tradeoff(groups, out)
    (out / "report.html").write_text(page(shown, figures, sweep_dirs, runs, notes), encoding="utf-8")
    return {"rows": rows, "markdown": md, "figures": figures, "out": out,
            "latex": latex(shown) if fmt == "latex" else None}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.report", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dirs", nargs="+", type=Path, metavar="SWEEP_DIR")
    parser.add_argument("--out", type=Path, default=None,
                        help="where table.md, table.csv, report.html, the PNGs and tb/ go (default: the sweep dir, or the "
                             "common parent of several)")
    parser.add_argument("--alpha", type=float, default=ALPHA,
                        help=f"family-wise error rate of the verdicts, Holm-corrected per table (default {ALPHA})")
    parser.add_argument("--strict", action="store_true",
                        help="refuse (exit 1, nothing written) instead of flagging: a row whose runs mix provenance, "
                             "or a folder holding runs of different sweep commands")
    parser.add_argument("--format", choices=("markdown", "latex"), default="markdown",
                        help="what is printed; latex also writes table.tex (booktabs, one table per question)")
    args = parser.parse_args(argv)
    try:
        result = report(args.sweep_dirs, args.out, args.alpha, strict=args.strict, fmt=args.format)
    except Exception as e:
        return exit_code(e)
    print(result["latex"] or result["markdown"])
    print(f"wrote {result['out'] / 'report.html'}, table.md, table.csv, table_long.csv{', table.tex' * bool(result['latex'])} and {len(result['figures'])} figures "
          f"({', '.join(p.name for p in result['figures'])}); TensorBoard: .venv/bin/tensorboard --logdir {result['out'] / 'tb'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
