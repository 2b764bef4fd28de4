"""Sweep dirs -> runs -> groups of runs, shared by ``src.report`` (tables) and ``src.figures``.

Every ``metrics.json`` under a sweep dir is one run. Runs are grouped by dataset × depth × settings × method ×
position × case; "settings" are the values of the composed config (``.hydra/config.yaml``) in which the runs of
a dataset and depth differ, so that runs made with different settings are never averaged together. A run whose
files cannot be read is kept with its ``problem`` (listed, never counted) rather than refusing the sweep.
"""
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import yaml

from src.errors import UserError
from src.paper import CASES, PAPER_DEPTH, PAPER_TABLE2

CASE_ORDER = ["baseline", *CASES, "custom"]
DATASET_ORDER = ["mnist", "svhn", "cifar10"]
METHOD_ORDER = ["hal"]  # the paper's method first, the others by name
DEFAULT_METHOD, DEFAULT_POSITION = "hal", 3  # what records written before methods existed were
# The group keys themselves (config keys and command-line overrides): never part of a group's "settings".
GROUP_KEYS = frozenset({"seed", "case", "case.name", "dataset", "dataset.name", "depth", "dataset.depth",
                        "model.depth", "method", "method.name", "method.position", "position"})
# Keys that only say how or where to run, for runs without .hydra/hydra.yaml (which holds the real list,
# hydra.job.config.override_dirname.exclude_keys): the list of conf/config.yaml when this was written.
RUN_ONLY_FALLBACK = frozenset({"experiment", "trainer.accelerator", "trainer.enable_progress_bar",
                               "progress_refresh_rate", "dataset.data_dir", "dataset.download", "dataset.on_device"})
# Keys that change results however a run's dir was named (older runs left trainer.devices out of it).
RESULT_KEYS = frozenset({"trainer.devices", "trainer.num_nodes", "trainer.strategy"})
# Config groups whose keys are only compared between runs of the same option (a DKS key is no setting of HAL).
SCOPED_GROUPS = ("method", "case")


class ReportError(UserError):
    """A sweep dir that cannot be reported on."""


@dataclass
class Run:
    dir: Path
    record: dict
    config: Optional[dict] = None  # the run's .hydra/config.yaml, flattened: {"trainer.max_epochs": "250", ...}
    settings: str = ""
    problem: Optional[str] = None  # why a run is not counted although its status may say finished
    run_only: frozenset = RUN_ONLY_FALLBACK

    @property
    def status(self) -> str:
        return self.record.get("status", "unknown")

    @property
    def finished(self) -> bool:
        return self.status == "finished" and self.problem is None

    @property
    def method(self) -> str:
        return str(self.record.get("method") or DEFAULT_METHOD)

    @property
    def position(self):
        position = self.record.get("position")
        return DEFAULT_POSITION if position is None else position


@dataclass
class Group:
    dataset: str
    depth: Optional[int]
    settings: str
    case: str
    method: str = DEFAULT_METHOD
    position: int = DEFAULT_POSITION
    runs: list[Run] = field(default_factory=list)

    @property
    def finished(self) -> list[Run]:
        return [r for r in self.runs if r.finished]

    @property
    def is_baseline(self) -> bool:
        return self.method == DEFAULT_METHOD and self.case == "baseline"

    @property
    def has_block(self) -> bool:
        """HAL's auxiliary block is part of the net: method hal or hal_*, with a case."""
        return (self.method == "hal" or self.method.startswith("hal_")) and self.case != "baseline"

    @property
    def label(self) -> str:
        """The case for the paper's HAL; otherwise method, position and case (``dks case1``, ``hal p1 case2``)."""
        if self.method == DEFAULT_METHOD and self.position == DEFAULT_POSITION:
            return self.case
        position = f" p{self.position}" if self.position != DEFAULT_POSITION else ""
        return f"{self.method}{position} {self.case}"

    def stats(self, key: str, sub=None) -> tuple[float, float, int]:
        """Mean, sample std (ddof=1; NaN for one value) and count of ``key`` (or ``key[sub]`` of a dict or list
        field) over the finished runs."""
        values = [v for v in (_pick(r.record, key, sub) for r in self.finished) if v is not None]
        if not values:
            return math.nan, math.nan, 0
        std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        return float(np.mean(values)), std, len(values)

    def paper(self) -> tuple[Optional[float], Optional[float]]:
        if PAPER_DEPTH.get(self.dataset) != self.depth or self.method != DEFAULT_METHOD:
            return None, None
        return PAPER_TABLE2[self.dataset].get(self.case, (None, None))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _pick(record: dict, key: str, sub=None) -> Optional[float]:
    value = record.get(key)
    if sub is not None:
        if isinstance(value, dict):
            value = value.get(str(sub))
        elif isinstance(value, list) and isinstance(sub, int) and -len(value) <= sub < len(value):
            value = value[sub]
        else:
            value = None
    return float(value) if _number(value) and math.isfinite(value) else None


def numbers(record: dict) -> dict[str, tuple[str, object]]:
    """Every numeric field of a record, dict and list fields entry by entry: {csv name: (key, sub)}."""
    found = {}
    for key, value in record.items():
        if _number(value):
            found[key] = (key, None)
        elif isinstance(value, dict):
            found.update({f"{key}.{k}": (key, str(k)) for k, v in value.items() if _number(v)})
        elif isinstance(value, list):
            found.update({f"{key}.{i}": (key, i) for i, v in enumerate(value) if _number(v)})
    return found


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


def override_settings(run: Run) -> str:
    """The run's command-line overrides that change what is trained, from Hydra's ``.hydra/overrides.yaml``."""
    path = run.dir / ".hydra" / "overrides.yaml"
    try:
        overrides = (_read_yaml(path) if path.exists() else None) or []
    except ValueError:
        overrides = []
    excluded = GROUP_KEYS | run.run_only
    return " ".join(sorted(str(o) for o in overrides if str(o).split("=", 1)[0].lstrip("+~") not in excluded))


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
            run.settings = override_settings(run)
        else:
            buckets[(run.record.get("dataset"), run.record.get("depth"))].append(run)
    for bucket in buckets.values():
        excluded = GROUP_KEYS.union(*(run.run_only for run in bucket))
        values: dict[tuple, set] = defaultdict(set)
        for run in bucket:
            for key, value in run.config.items():
                group = key.split(".", 1)[0]
                scope = run.config.get(f"{group}.name") if group in SCOPED_GROUPS else None
                values[(key, scope)].add(value)
        differing = sorted({k for (k, _), v in values.items() if len(v) > 1 and k not in excluded})
        for run in bucket:
            run.settings = " ".join(f"{k}={run.config[k]}" for k in differing if k in run.config)


def load_run(path: Path) -> Run:
    """One ``metrics.json`` and its dir; a file that cannot be used gives a run with its ``problem``."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return Run(path.parent, {"status": "unreadable"}, problem=f"cannot read metrics.json: {e}")
    if not isinstance(record, dict):
        return Run(path.parent, {"status": "unreadable"}, problem="metrics.json holds no JSON object")
    run = Run(path.parent, record, run_only=run_only_keys(path.parent))
    try:
        run.config = run_config(path.parent)
    except ValueError as e:
        run.problem = str(e)
    if run.status == "finished" and run.problem is None:
        missing = [k for k in ("dataset", "depth") if record.get(k) is None]
        if missing:
            run.problem = f"metrics.json has no {' and no '.join(missing)}"
        elif not _number(record.get("test_error")):
            run.problem = "metrics.json has no numeric test_error"
    return run


def load_runs(sweep_dirs: list[Path]) -> list[Run]:
    runs, seen = [], set()
    for sweep in sweep_dirs:
        if not sweep.is_dir():
            raise ReportError(f"{sweep} is not a directory")
        paths = sorted(sweep.rglob("metrics.json"))
        if not paths:
            raise ReportError(f"no metrics.json under {sweep}: pass a sweep dir (outputs/sweeps/NAME) or a run dir")
        for path in paths:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                runs.append(load_run(path))
    assign_settings([r for r in runs if r.problem is None])
    return runs


def order_key(value, order: list) -> tuple:
    """Sort key: the position in ``order``, then anything else by its text."""
    return (order.index(value), "") if value in order else (len(order), str(value))


def natural(value) -> tuple:
    """Sort key: numbers by value (2 before 10), then anything else by its text."""
    number = _number(value)
    return (not number, value if number else 0, str(value))


def group_runs(runs: list[Run]) -> list[Group]:
    """Groups of the runs that can be placed (runs with a ``problem`` are only listed)."""
    groups: dict[tuple, Group] = {}
    for run in runs:
        if run.problem is not None:
            continue
        r = run.record
        key = (str(r.get("dataset", "unknown")), r.get("depth"), run.settings, str(r.get("case", "unknown")),
               run.method, run.position)
        groups.setdefault(key, Group(*key)).runs.append(run)
    return sorted(groups.values(), key=lambda g: (
        order_key(g.dataset, DATASET_ORDER), natural(g.depth), g.settings, not g.is_baseline,
        order_key(g.method, METHOD_ORDER),
        natural(g.position), order_key(g.case, CASE_ORDER)))
