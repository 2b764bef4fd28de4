"""A run's settings: the values of its composed config (``.hydra/config.yaml``) in which it differs from the
other runs of its dataset and depth, so that runs made with different settings are never averaged together.
Runs without that file fall back to their command-line overrides (``.hydra/overrides.yaml``).
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Optional, Protocol

import yaml


class Run(Protocol):
    """What settings need of a run (``src.report.runs.Run``, which imports this module, not the reverse)."""
    dir: Path
    record: dict
    config: Optional[dict]
    run_only: frozenset
    settings: str
    setting_values: dict

# The group keys themselves (config keys and command-line overrides): never part of a group's "settings".
GROUP_KEYS = frozenset({"seed", "case", "case.name", "case.of", "case.shuffle_seed", "dataset", "dataset.name", "depth", "dataset.depth",
                        "model.depth", "method", "method.name", "method.position", "position"})
# Keys that only say how or where to run, for runs without .hydra/hydra.yaml (which holds the real list,
# hydra.job.config.override_dirname.exclude_keys): today's list of conf/config.yaml, in this one place
# (tests/report/test_runs.py checks the two agree).
RUN_ONLY_FALLBACK = frozenset({"experiment", "trainer.accelerator", "trainer.enable_progress_bar",
                               "progress_refresh_rate", "dataset.data_dir", "dataset.download", "dataset.on_device",
                               "logger", "threads", "print_config", "dataset.num_workers", "dataset.pin_memory",
                               "dataset.prefetch_factor", "dataset.persistent_workers"})
# Keys that change results however a run's dir was named (older runs left trainer.devices out of it).
RESULT_KEYS = frozenset({"trainer.devices", "trainer.num_nodes", "trainer.strategy"})
# Config groups whose keys are only compared between runs of the same option (a DKS key is no setting of HAL).
SCOPED_GROUPS = ("method", "case")


def _read_yaml(path: Path):
    """The file's YAML; raises ValueError with one line why."""
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        mark = getattr(e, "problem_mark", None)
        why = f"{e.problem} (line {mark.line + 1})" if mark and getattr(e, "problem", None) else str(e).splitlines()[0]
        raise ValueError(f"cannot read {path.relative_to(path.parent.parent)}: {why}") from None


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
    """The run's composed config as Hydra saved it (``.hydra/config.yaml``, interpolations unresolved);
    raises ValueError if it is there but cannot be read."""
    path = run_dir / ".hydra" / "config.yaml"
    config = _read_yaml(path) if path.exists() else None
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"{path.relative_to(run_dir)} holds no mapping")
    return flatten(config) if config else None


def run_only_keys(run_dir: Path) -> frozenset:
    """The keys Hydra left out of the run's dir name (``hydra.job.config.override_dirname.exclude_keys`` in
    ``.hydra/hydra.yaml``); the built-in list where the run has none."""
    path = run_dir / ".hydra" / "hydra.yaml"
    try:
        keys = _read_yaml(path)["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"] if path.exists() else None
    except (ValueError, KeyError, TypeError):
        keys = None
    return frozenset(str(k) for k in keys) - RESULT_KEYS if isinstance(keys, list) else RUN_ONLY_FALLBACK


def override_settings(run: Run) -> list[str]:
    """The run's command-line overrides that change what is trained, from Hydra's ``.hydra/overrides.yaml``."""
    path = run.dir / ".hydra" / "overrides.yaml"
    try:
        overrides = (_read_yaml(path) if path.exists() else None) or []
    except ValueError:
        overrides = []
    excluded = GROUP_KEYS | run.run_only
    return sorted(str(o) for o in overrides if str(o).split("=", 1)[0].lstrip("+~") not in excluded)


def assign_settings(runs: list[Run]) -> None:
    """A run's settings: the config values that differ between the runs of its dataset and depth.

    From the composed config, not the command line, so that ``experiment=table2_svhn`` and the same keys
    typed by hand are one setting, and a preset never hides what it changed. A key that some runs lack
    (a config of an older version) is no difference; a ``method.*`` key only differs between runs of one
    method. Runs without ``.hydra/config.yaml`` fall back to their command-line overrides.
    """
    buckets: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        if run.config is None:
            overrides = override_settings(run)
            run.setting_values = dict((o.split("=", 1) + [""])[:2] for o in overrides)
            run.settings = " ".join(overrides)
        else:
            buckets[(run.record.get("dataset"), run.record.get("depth"))].append(run)
    for bucket in buckets.values():
        excluded = GROUP_KEYS.union(*(run.run_only for run in bucket))
        values: dict[tuple, set] = defaultdict(set)
        for run in bucket:
            for key, value in run.config.items():
                group = key.split(".", 1)[0]
                scope = run.config.get(f"{group}.name") if group in SCOPED_GROUPS else None
                if group == "case":  # a random tree's keys only compared between copies of one case
                    scope = (scope, run.config.get("case.of"))
                values[(key, scope)].add(value)
        differing = sorted({k for (k, _), v in values.items() if len(v) > 1 and k not in excluded})
        for run in bucket:
            run.setting_values = {k: run.config[k] for k in differing if k in run.config}
            run.settings = " ".join(f"{k}={v}" for k, v in run.setting_values.items())
