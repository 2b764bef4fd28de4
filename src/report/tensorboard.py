"""The report's HPARAMS tab: one entry per counted run, in ``<out>/tb/runs/<run>``.

Each entry shows only the settings that vary between the counted runs (dataset, depth, method, position, case,
seed and the config keys of ``src.report.runs`` "settings") and every measure of the run (``src.report.runs.measures``:
oracle, inferred and masked errors, hierarchy metrics, costs, ...), plus the run's own Δ vs baseline and fair Δ:
against the baseline's run of the same seed, or the baseline's mean where it has no such seed.
"""
import math
import shutil
from pathlib import Path
from typing import Optional

from src.report.rows import baseline_of, baselines, delta_baselines
from src.report.runs import Group, Run

DESCRIBED_BY = ("dataset", "depth", "method", "position", "case", "seed")
HPARAMS_NAMES = {"delta": "delta_vs_baseline", "fair_delta": "fair_delta"}   # the Δs of delta_baselines, by name


def _hparam(value):
    return value if isinstance(value, (int, float, str, bool)) else str(value)


def _against(run: Run, base: Optional[Group], name: str) -> Optional[float]:
    """The baseline's ``name`` for the run's seed (when that seed is there once), else the baseline's mean."""
    if base is None:
        return None
    values = base.values(name)
    same = [v for s, v in values if s == run.seed]
    if len(same) == 1:
        return same[0]
    return sum(v for _, v in values) / len(values) if values else None


def run_entries(groups: list[Group]) -> list[tuple[Run, dict, dict]]:
    """(run, hparams, metrics) of every counted run."""
    found = baselines(groups)
    entries = []
    for g in groups:
        base = baseline_of(g, found)
        for run in g.finished:
            hparams = {"dataset": g.dataset, "depth": g.depth, "method": g.method, "position": g.position,
                       "case": g.case, "seed": run.seed, **run.setting_values}
            metrics = dict(run.measures)
            if not g.is_baseline:
                for key, measure in delta_baselines(g).items():
                    theirs = _against(run, base, measure)
                    if theirs is not None:
                        metrics[HPARAMS_NAMES[key]] = run.measures["test_error"] - theirs
            entries.append((run, hparams, metrics))
    varying = {k for k in {k for _, h, _ in entries for k in h}
               if len({str(h.get(k)) for _, h, _ in entries}) > 1}
    return [(run, {k: _hparam(v) for k, v in h.items() if k in varying and v is not None}, m)
            for run, h, m in entries]


def _name(run: Run, several: bool) -> str:
    here = run.dir.resolve()
    rel = here.relative_to(run.sweep) if run.sweep and here != run.sweep else Path(here.name)
    return str(Path(run.sweep.name) / rel) if several and run.sweep else str(rel)


def write_hparams(writer, groups: list[Group]) -> int:
    """One ``add_hparams`` per counted run under the writer's ``runs/`` (replaced as a whole); returns the count."""
    shutil.rmtree(Path(writer.log_dir) / "runs", ignore_errors=True)
    entries = run_entries(groups)
    several = len({run.sweep for run, _, _ in entries}) > 1
    for run, hparams, metrics in entries:
        metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
        writer.add_hparams(hparams or {"run": run.dir.name}, metrics, run_name=f"runs/{_name(run, several)}")
    return len(entries)
