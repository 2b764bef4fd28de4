"""Sweep dirs -> runs -> groups of runs, shared by ``src.report`` (tables) and ``src.report.figures``.

Every ``metrics.json`` under a sweep dir is one run; an ``eval.json`` beside it (``python -m src.eval``) replaces
its metric fields (``status`` stays the one of ``metrics.json``). A run's measures are its numeric fields,
flattened (``measures``); settings and tables in a record (the class -> superclass table, ``eval_hierarchy``,
seed lists) are never measures. Runs are grouped by dataset × depth × settings × method ×
position × case; "settings" (``src.report.settings``) are the values of the composed config (``.hydra/config.yaml``) in which the runs of
a dataset and depth differ, so that runs made with different settings are never averaged together. A run whose
files cannot be read is kept with its ``problem`` (listed, never counted) rather than refusing the sweep.
"""
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from src.run.errors import UserError
from src.report.paper import PAPER_DEPTH, PAPER_TABLE2
from src.report.settings import GROUP_KEYS, RUN_ONLY_FALLBACK, assign_settings, run_config, run_only_keys  # noqa: F401 (API)

DATASET_ORDER = ["mnist", "svhn", "cifar10"]
METHOD_ORDER = ["hal"]  # the paper's method first, the others by name
DEFAULT_METHOD, DEFAULT_POSITION = "hal", 3
# A random-tree run (case.name=random, case.of=<case>, case.shuffle_seed=<int>) is grouped as ``random(<case>)``,
# pooled over shuffle seeds, and compared with the same method on the real tree (src.report.control).
RANDOM_CASE = "random"  # what records written before methods existed were
# Scalar record fields that describe a run rather than measure it.
DESCRIPTIONS = frozenset({"seed", "depth", "epochs", "position", "resumed_at_epoch"})
# A list field with this prefix holds one value per superclass of the run's table; its measures are named after
# the superclass's classes (per_superclass_error.classes_5-6-7-8-9).
PER_SUPERCLASS = "per_superclass"


class ReportError(UserError):
    """A sweep dir that cannot be reported on."""


@dataclass
class Run:
    dir: Path
    record: dict
    config: Optional[dict] = None  # the run's .hydra/config.yaml, flattened: {"trainer.max_epochs": "250", ...}
    settings: str = ""
    setting_values: dict = field(default_factory=dict)  # the settings as {key: value}
    problem: Optional[str] = None  # why a run is not counted although its status may say finished
    run_only: frozenset = RUN_ONLY_FALLBACK
    sweep: Optional[Path] = None  # the sweep dir it was found under
    evaluated: bool = False  # its eval.json replaced metric fields
    _measures: Optional[dict] = field(default=None, repr=False)

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

    @property
    def seed(self):
        return self.record.get("seed")

    @property
    def case(self) -> str:
        """The record's case; for a random-tree run, ``random(<the case whose shape it copies>)``."""
        case = str(self.record.get("case", "unknown"))
        of = (self.config or {}).get("case.of") if case == RANDOM_CASE else None
        return random_case(of) if of not in (None, "null") else case

    @property
    def tuned(self) -> bool:
        """Trained with a study's best values: the confirmation (``src.tuning.confirm``) writes ``tuned.yaml`` beside it."""
        return (self.dir / "tuned.yaml").exists()

    @property
    def measures(self) -> dict[str, float]:
        if self._measures is None:
            self._measures = measures(self.record)
        return self._measures


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

    def values(self, name: str) -> list[tuple[object, float]]:
        """(seed, value) of the measure ``name`` (``measures``) for every finished run that has it."""
        return [(r.seed, r.measures[name]) for r in self.finished if name in r.measures]

    def stats(self, name: str, sub=None) -> tuple[float, float, int]:
        """Mean, sample std (ddof=1; NaN for one value) and count of the measure ``name`` (``name.sub`` with
        ``sub``) over the finished runs."""
        values = [v for _, v in self.values(name if sub is None else f"{name}.{sub}")]
        if not values:
            return math.nan, math.nan, 0
        std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        return float(np.mean(values)), std, len(values)

    def paper(self) -> tuple[Optional[float], Optional[float]]:
        if PAPER_DEPTH.get(self.dataset) != self.depth or self.method != DEFAULT_METHOD:
            return None, None
        return PAPER_TABLE2[self.dataset].get(self.case, (None, None))


def random_case(of: str) -> str:
    return f"{RANDOM_CASE}({of})"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value) -> bool:
    return _number(value) and math.isfinite(value)


def _superclass_names(record: dict, length: int) -> Optional[list[str]]:
    """``classes_0-1-2`` for each superclass of the run's table (``superclasses``, else ``eval_hierarchy``)."""
    table = record.get("superclasses") or record.get("eval_hierarchy")
    if not isinstance(table, list) or not all(isinstance(t, int) for t in table) or max(table, default=-1) + 1 != length:
        return None
    return ["classes_" + "-".join(str(c) for c, t in enumerate(table) if t == s) for s in range(length)]


def measures(record: dict, prefix: str = "") -> dict[str, float]:
    """Every finite number a record measures, flat: scalars by name, mappings entry by entry (``key.name``, or
    ``key@k`` for a number k: ``hierarchical_distance@5``), lists of floats entry by entry (``key.i``; per
    superclass: ``key.classes_...``). Left out: the fields that describe the run (``DESCRIPTIONS``), text,
    and lists of integers, which are tables and seed lists (the class -> superclass table), not measures."""
    found = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if _number(value):
            if _finite(value) and not (not prefix and key in DESCRIPTIONS):
                found[name] = float(value)
        elif isinstance(value, dict):
            found.update(measures({f"@{k}" if str(k).isdigit() else f".{k}": v for k, v in value.items()}, name))
        elif isinstance(value, list) and not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            names = (_superclass_names(record, len(value)) if key.startswith(PER_SUPERCLASS) else None) or \
                [str(i) for i in range(len(value))]
            found.update({f"{name}.{n}": float(v) for n, v in zip(names, value) if _finite(v)})
    return found


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
        run.evaluated = merge_eval(run)
    except ValueError as e:
        run.problem = str(e)
    if run.status == "finished" and run.problem is None:
        missing = [k for k in ("dataset", "depth") if record.get(k) is None]
        if missing:
            run.problem = f"metrics.json has no {' and no '.join(missing)}"
        elif not _number(record.get("test_error")):
            run.problem = "metrics.json has no numeric test_error"
    return run


def merge_eval(run: Run) -> bool:
    """Let the run's ``eval.json`` (``python -m src.eval``) replace the fields of its record, ``status`` aside;
    raises ValueError if it is there but unusable."""
    path = run.dir / "eval.json"
    if not path.exists():
        return False
    try:
        fields = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read eval.json: {e}") from None
    if not isinstance(fields, dict):
        raise ValueError("eval.json holds no JSON object")
    fields = {LEGACY_EVAL_KEYS.get(k, k): v for k, v in fields.items()}
    run.record = {**run.record, **{k: v for k, v in fields.items() if k != "status"}}
    return True


# eval.json keys of runs already on disk -> today's names: an eval.json written before issue 36 gave its own time as
# duration_s, which replaced the training run's.
LEGACY_EVAL_KEYS = {"duration_s": "eval_duration_s"}


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
                runs[-1].sweep = sweep.resolve()
    assign_settings([r for r in runs if r.problem is None])
    return runs


def order_key(value, order: list) -> tuple:
    """Sort key: the position in ``order``, then anything else by its text."""
    return (order.index(value), "") if value in order else (len(order), str(value))


def case_key(case) -> tuple:
    """Sort key of a case: the baseline first, custom (your own superclasses) last, the others in natural order
    (case1 ... case4, then coarse, level1, ...; case2 before case10). The report reads case names from the runs."""
    parts = re.split(r"(\d+)", str(case))
    return (case != "baseline") + (case == "custom"), tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


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
        key = (str(r.get("dataset", "unknown")), r.get("depth"), run.settings, run.case, run.method, run.position)
        groups.setdefault(key, Group(*key)).runs.append(run)
    return sorted(groups.values(), key=lambda g: (
        order_key(g.dataset, DATASET_ORDER), natural(g.depth), g.settings, not g.is_baseline,
        order_key(g.method, METHOD_ORDER),
        natural(g.position), case_key(g.case)))
