"""Groups of runs -> the report's rows: every number of ``table.csv``, unformatted, with its statistics.

Per group: the test error's mean, sample std and 95 % t-interval over seeds; Δ vs the baseline and fair Δ
(the oracle error minus the baseline's masked error of the same case), each paired by seed where both sides
have the same seeds and by Welch's test otherwise (``src.report.stats``); a verdict per Δ after Holm's correction
across the rows of the table; the mean ± std of every other measure of the runs (``src.report.runs.measures``).
"""
import math
from dataclasses import dataclass
from typing import Optional

from src.report.paper import PAPER_TABLE2, paper_gap
from src.report.runs import DEFAULT_POSITION, Group, natural
from src.report.stats import Comparison, compare, holm, seeds_needed, t_interval, verdict

EXPECTED_SEEDS = 5
ALPHA = 0.05


@dataclass(frozen=True)
class Column:
    """A measure the table shows as mean ± std, where any row has it."""
    measure: str
    header: str
    digits: int = 2
    table2: bool = True  # shown in the Table 2 layout too, not only in the methods layout


# The measures shown as columns, in this order after the errors and Δs; adding a column is one line here.
COLUMNS = [
    Column("test_error_inferred", "inferred %"),
    Column("test_error_shuffled", "shuffled %"),
    Column("test_error_crm", "CRM %"),  # the no-hint hierarchy baseline (docs/hierarchy.md)
    # the field's mistake metrics (docs/hierarchy.md), on each run's `hierarchy_name` tree
    Column("mistake_severity", "mistake severity", 3),
    Column("hierarchical_distance@1", "HD@1", 3),
    Column("hierarchical_distance@5", "HD@5", 3),
    Column("hierarchical_distance@20", "HD@20", 3),
    Column("ece", "ECE", 3),
    Column("superclass_acc", "superclass acc %"),
    Column("within_superclass_mistakes", "within-superclass mistakes %"),
    Column("hierarchy_mean_corr", "hierarchy_mean_corr", 3, table2=False),
    Column("hierarchy_rf", "hierarchy_rf", table2=False),
]
COSTS = ("train_images_per_s", "params_train", "params_inference")
# The prefixes of the two comparisons' columns: of the statistics (delta_p) and of verdict, seeds_needed, test.
DELTAS = (("delta", ""), ("fair_delta", "fair_"))


def baselines(groups: list[Group]) -> dict[tuple, Group]:
    """(dataset, depth, settings[, position]) -> the plain network's group (method hal, case baseline)."""
    found = {}
    for g in sorted((g for g in groups if g.is_baseline), key=lambda g: g.position != DEFAULT_POSITION):
        found.setdefault((g.dataset, g.depth, g.settings), g)
        found.setdefault((g.dataset, g.depth, g.settings, g.position), g)
    return found


def baseline_of(g: Group, found: dict[tuple, Group]) -> Optional[Group]:
    return found.get((g.dataset, g.depth, g.settings, g.position)) or found.get((g.dataset, g.depth, g.settings))


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def one_sweep(*groups: Group) -> bool:
    """Whether all finished runs of the groups come from one sweep dir (measured speeds compare only there)."""
    return len({r.sweep for g in groups for r in g.finished}) == 1


def delta_baselines(g: Group) -> dict[str, str]:
    """The baseline's measure each Δ of ``g`` subtracts from ``g``'s test error, by Δ: ``delta`` the baseline's test
    error; ``fair_delta`` (rows with HAL's block only) the baseline's masked error of ``g``'s own case, the baseline
    given the same hint. The one definition for the table's rows and TensorBoard's HPARAMS."""
    found = {"delta": "test_error"}
    if g.has_block:
        found["fair_delta"] = f"test_error_masked.{g.case}"
    return found


def comparisons(g: Group, base: Optional[Group]) -> tuple[Optional[Comparison], Optional[Comparison]]:
    """Δ vs baseline and fair Δ (``delta_baselines``) over the seeds."""
    if base is None or g.is_baseline:
        return None, None
    mine, theirs = g.values("test_error"), delta_baselines(g)
    delta = compare(mine, base.values(theirs["delta"]))
    fair = compare(mine, base.values(theirs["fair_delta"])) if "fair_delta" in theirs else None
    return delta, fair


def _flags(seeds: list, epochs: list, failed: int, unfinished: int, whys: dict[str, list[str]]) -> list[str]:
    flags = [f"n<{EXPECTED_SEEDS}"] if len(seeds) < EXPECTED_SEEDS else []
    flags += [f"{failed} failed"] if failed else []
    flags += [f"{unfinished} unfinished"] if unfinished else []
    flags += ["repeated seeds"] if len(set(seeds)) < len(seeds) else []
    flags += ["mixed epochs"] if len(epochs) > 1 else []
    flags += [f"no interval ({why}): {', '.join(what)}" for why, what in whys.items()]
    return flags


def _statistics(prefix: str, c: Optional[Comparison]) -> dict:
    return {f"{prefix}_ci_low": c.low if c else None, f"{prefix}_ci_high": c.high if c else None,
            f"{prefix}_p": c.p if c else None}


def table_rows(groups: list[Group], alpha: float = ALPHA) -> list[dict]:
    """One dict per group: every number of the table, unformatted (the CSV), plus flags."""
    found = baselines(groups)
    present = [c.measure for c in COLUMNS if any(g.stats(c.measure)[2] for g in groups)]
    extra = sorted({name for g in groups for r in g.finished for name in r.measures} - {"test_error", *present})
    rows, compared = [], []
    for g in groups:
        base = baseline_of(g, found)
        mean, std, n = g.stats("test_error")
        error = t_interval([v for _, v in g.values("test_error")]) if n else None  # n = 0: only the flags say why
        delta, fair = comparisons(g, base)
        whys: dict[str, list[str]] = {}
        for what, value in (("test error", error), ("Δ", delta), ("fair Δ", fair)):
            if value is not None and value.why:
                whys.setdefault(value.why, []).append(what)
        paper_mean, paper_std = g.paper()
        paper_delta = None
        if paper_mean is not None and g.case != "baseline":
            paper_delta = paper_mean - PAPER_TABLE2[g.dataset]["baseline"][0]
        seeds = [r.seed for r in g.finished]
        epochs = sorted({r.record.get("epochs") for r in g.finished}, key=natural)
        row = {"dataset": g.dataset, "depth": g.depth, "settings": g.settings, "case": g.case, "n": n,
               "method": g.method, "position": g.position,
               "seeds": " ".join(str(s) for s in sorted(seeds, key=natural)),
               "epochs": " ".join(str(e) for e in epochs),
               "test_error_mean": mean, "test_error_std": std,
               "test_error_ci_low": error.low if error else None, "test_error_ci_high": error.high if error else None,
               "delta_vs_baseline": delta.delta if delta else math.nan, **_statistics("delta", delta),
               "delta_p_holm": None, "verdict": "", "seeds_needed": None, "test": delta.test if delta else "",
               "paper_test_error": paper_mean, "paper_test_error_std": paper_std,
               "paper_delta_vs_baseline": paper_delta,
               "paper_differs": "" if paper_mean is None else paper_gap(
                   [r.record.get("epochs") for r in g.finished], [(r.config or {}).get("dataset.val_size") for r in g.finished])}
        for name in present:
            row[f"{name}_mean"], row[f"{name}_std"], _ = g.stats(name)
        row.update({"fair_delta": fair.delta if fair else math.nan, **_statistics("fair_delta", fair),
                    "fair_delta_p_holm": None, "fair_verdict": "", "fair_seeds_needed": None,
                    "fair_test": fair.test if fair else ""})
        for name in COSTS:
            mine, theirs = g.stats(name)[0], base.stats(name)[0] if base else math.nan
            if name == "train_images_per_s":
                row[f"{name}_vs_baseline"] = _ratio(mine, theirs) if base and one_sweep(g, base) else math.nan
            else:
                row[f"{name}_vs_baseline"] = mine - theirs
        for name in extra:
            row[f"{name}_mean"], row[f"{name}_std"], _ = g.stats(name)
        failed = sum(r.status == "failed" for r in g.runs)
        unfinished = sum(not r.finished and r.status != "failed" for r in g.runs)
        row.update(failed=failed, unfinished=unfinished, flags="; ".join(_flags(seeds, epochs, failed, unfinished, whys)))
        row["tuned_runs"] = sum(r.tuned for r in g.finished)   # with a tuned record (src.report.questions)
        rows.append(row)
        compared.append((delta, fair))
    add_verdicts(rows, compared, alpha)
    return rows


def add_verdicts(rows: list[dict], compared: list[tuple], alpha: float) -> None:
    """Holm across the rows, separately for Δ and for fair Δ; for ``no evidence``, the seeds a paired test
    would need for 80 % power at the observed difference and sd (``src.report.stats.seeds_needed``)."""
    for k, (prefix, short) in enumerate(DELTAS):
        adjusted = holm([c[k].p if c[k] else None for c in compared])
        for row, c, p in zip(rows, compared, adjusted):
            row[f"{prefix}_p_holm"] = p
            row[f"{short}verdict"] = verdict(c[k], p, alpha)
            if row[f"{short}verdict"] == "no evidence" and c[k].p is not None:
                row[f"{short}seeds_needed"] = seeds_needed(c[k].delta, c[k].sd, alpha)
