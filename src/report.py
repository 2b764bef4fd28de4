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
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import yaml

from src.errors import UserError, exit_code
from src.figures import CASE_ORDER, order_key, write_figures

# The paper's Table 2: test error %, mean and std over 5 runs (its baselines have no std). The paper's
# nets are 10 layers deep for MNIST, 28 for SVHN and CIFAR-10; other depths get no paper value.
PAPER_TABLE2 = {
    "mnist": {"baseline": (0.93, None), "case1": (0.43, 0.03), "case2": (0.73, 0.06), "case3": (0.70, 0.05),
              "case4": (0.69, 0.00)},
    "svhn": {"baseline": (4.05, None), "case1": (2.53, 0.06), "case2": (2.64, 0.11), "case3": (2.66, 0.07),
             "case4": (2.86, 0.07)},
    "cifar10": {"baseline": (6.81, None), "case1": (3.30, 0.06), "case2": (5.30, 0.14), "case3": (6.46, 0.08),
                "case4": (5.13, 0.09)},
}
PAPER_DEPTH = {"mnist": 10, "svhn": 28, "cifar10": 28}
# Written by the test protocols when present (%), shown as mean ± std beside test_error.
OPTIONAL_COLUMNS = ["test_error_inferred", "test_error_shuffled", "superclass_acc", "within_superclass_mistakes"]
EXPECTED_SEEDS = 5
# Keys (of the config, or of a command-line override) that are the group key itself, or only say how to run
# (those left out of a sweep's job dir names, conf/config.yaml): never part of a group's "settings".
NOT_SETTINGS = {"seed", "case", "case.name", "dataset", "dataset.name", "depth", "dataset.depth", "model.depth",
                "experiment", "trainer.accelerator", "trainer.devices", "trainer.enable_progress_bar",
                "progress_refresh_rate", "dataset.data_dir", "dataset.download", "dataset.on_device"}
DATASET_ORDER = ["mnist", "svhn", "cifar10"]


class ReportError(UserError):
    """A sweep dir that cannot be reported on."""


@dataclass
class Run:
    dir: Path
    record: dict
    config: Optional[dict] = None  # the run's .hydra/config.yaml, flattened: {"trainer.max_epochs": "250", ...}
    settings: str = ""

    @property
    def status(self) -> str:
        return self.record.get("status", "unknown")

    @property
    def finished(self) -> bool:
        return self.status == "finished"


@dataclass
class Group:
    dataset: str
    depth: Optional[int]
    settings: str
    case: str
    runs: list[Run] = field(default_factory=list)

    @property
    def finished(self) -> list[Run]:
        return [r for r in self.runs if r.finished]

    def stats(self, key: str) -> tuple[float, float, int]:
        """Mean, sample std (ddof=1; NaN for one value) and count of ``key`` over the finished runs."""
        values = [r.record[key] for r in self.finished if isinstance(r.record.get(key), (int, float))]
        if not values:
            return math.nan, math.nan, 0
        std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        return float(np.mean(values)), std, len(values)

    def paper(self) -> tuple[Optional[float], Optional[float]]:
        if PAPER_DEPTH.get(self.dataset) != self.depth:
            return None, None
        return PAPER_TABLE2[self.dataset].get(self.case, (None, None))


def _read_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ReportError(f"cannot read {path}: {e}") from None


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """{"trainer": {"max_epochs": 250}} -> {"trainer.max_epochs": "250"}; lists stay whole ("[0.1, 0.2]")."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = _text(value)
    return flat


def run_config(run_dir: Path) -> Optional[dict[str, str]]:
    """The run's composed config as Hydra saved it (``.hydra/config.yaml``, interpolations unresolved)."""
    path = run_dir / ".hydra" / "config.yaml"
    config = _read_yaml(path) if path.exists() else None
    return flatten(config) if isinstance(config, dict) else None


def override_settings(run_dir: Path) -> str:
    """The run's command-line overrides that change what is trained, from Hydra's ``.hydra/overrides.yaml``."""
    path = run_dir / ".hydra" / "overrides.yaml"
    overrides = (_read_yaml(path) if path.exists() else None) or []
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in NOT_SETTINGS]
    return " ".join(sorted(kept))


def assign_settings(runs: list[Run]) -> None:
    """A run's settings: the config values that differ between the runs of its dataset and depth.

    From the composed config, not the command line, so that ``experiment=table2_svhn`` and the same keys
    typed by hand are one setting, and a preset never hides what it changed. A key that some runs lack
    (a config of an older version) is no difference. Runs without ``.hydra/config.yaml`` fall back to their
    command-line overrides.
    """
    buckets: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        if run.config is None:
            run.settings = override_settings(run.dir)
        else:
            buckets[(run.record.get("dataset"), run.record.get("depth"))].append(run)
    for bucket in buckets.values():
        values: dict[str, set] = defaultdict(set)
        for run in bucket:
            for key, value in run.config.items():
                values[key].add(value)
        differing = sorted(k for k, v in values.items() if len(v) > 1 and k not in NOT_SETTINGS)
        for run in bucket:
            run.settings = " ".join(f"{k}={run.config[k]}" for k in differing if k in run.config)


def load_runs(sweep_dirs: list[Path]) -> list[Run]:
    runs, seen = [], set()
    for sweep in sweep_dirs:
        if not sweep.is_dir():
            raise ReportError(f"{sweep} is not a directory")
        paths = sorted(sweep.rglob("metrics.json"))
        if not paths:
            raise ReportError(f"no metrics.json under {sweep}: pass a sweep dir (outputs/sweeps/NAME) or a run dir")
        for path in paths:
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                record = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ReportError(f"cannot read {path}: {e}") from None
            if not isinstance(record, dict):
                raise ReportError(f"{path} holds no JSON object")
            if record.get("status") == "finished" and not isinstance(record.get("test_error"), (int, float)):
                raise ReportError(f"{path} says finished but has no numeric test_error")
            runs.append(Run(path.parent, record, run_config(path.parent)))
    assign_settings(runs)
    return runs


def _natural(value) -> tuple:
    """Sort key: numbers by value (2 before 10), then anything else by its text."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (not number, value if number else 0, str(value))


def group_runs(runs: list[Run]) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for run in runs:
        r = run.record
        key = (str(r.get("dataset", "unknown")), r.get("depth"), run.settings, str(r.get("case", "unknown")))
        groups.setdefault(key, Group(*key)).runs.append(run)
    return sorted(groups.values(), key=lambda g: (order_key(g.dataset, DATASET_ORDER), g.depth or 0, g.settings,
                                                  order_key(g.case, CASE_ORDER)))


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
        epochs = sorted({r.record.get("epochs") for r in g.finished}, key=_natural)
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
               "seeds": " ".join(str(s) for s in sorted(seeds, key=_natural)),
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
