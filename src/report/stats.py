"""The report's statistics over seeds: t-intervals, paired and Welch tests, Holm's correction, seeds needed.

Pure functions of numbers (``scipy.stats`` does the distributions). A value that cannot be estimated (one
seed, zero variance) is ``None`` with the reason in ``why``, never NaN. Values come as ``(seed, value)``
pairs so that a comparison can pair them by seed.
"""
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

CONFIDENCE = 0.95  # the field's t-based 95 % intervals over seeds (e.g. HAFrame, ICCV 2023)
POWER = 0.8
MAX_SEEDS = 200
Pairs = Sequence[tuple[object, float]]


@dataclass(frozen=True)
class Interval:
    mean: float
    low: Optional[float] = None
    high: Optional[float] = None
    why: str = ""  # why there is no interval: "n=1", "zero variance"


@dataclass(frozen=True)
class Comparison:
    """a − b: ``delta`` is the difference of the means (paired: the mean of the per-seed differences)."""
    delta: float
    test: str  # "paired" (same seeds on both sides) or "welch"
    n: int  # pairs (paired), or the smaller side (welch)
    low: Optional[float] = None
    high: Optional[float] = None
    p: Optional[float] = None
    sd: Optional[float] = None  # sd of one seed's difference: of the differences, or sqrt(sd_a² + sd_b²)
    why: str = ""


def _flat(values: np.ndarray) -> bool:
    """All equal, up to the rounding of the subtractions that made them (1.0 - 1.6 vs 0.4 - 1.0)."""
    return bool(np.ptp(values) <= 1e-9 * max(1.0, float(np.abs(values).max())))


def _spread_why(values: np.ndarray) -> str:
    if len(values) < 2:
        return f"n={len(values)}"
    return "zero variance" if _flat(values) else ""


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean and Student-t interval: mean ± t_{(1+c)/2, n−1} · s/√n, s the sample std (ddof=1)."""
    from scipy import stats  # here: scipy takes a second to import, and src.report --help needs none

    x = np.asarray(values, dtype=np.float64)
    why = _spread_why(x)
    if why:
        return Interval(float(x.mean()) if len(x) else math.nan, why=why)
    low, high = stats.t.interval(confidence, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    return Interval(float(x.mean()), float(low), float(high))


def paired(a: Pairs, b: Pairs) -> bool:
    """Whether a and b hold the same seeds, each once: then their differences are taken seed by seed."""
    seeds_a, seeds_b = [s for s, _ in a], [s for s, _ in b]
    return len(set(seeds_a)) == len(seeds_a) and len(set(seeds_b)) == len(seeds_b) and set(seeds_a) == set(seeds_b)


def compare(a: Pairs, b: Pairs, confidence: float = CONFIDENCE) -> Optional[Comparison]:
    """a − b over seeds. Same seeds: the paired t-test (``ttest_rel``) and the t-interval of the per-seed
    differences. Otherwise Welch's test (``ttest_ind(equal_var=False)``) and the Welch–Satterthwaite interval.
    None if a side is empty."""
    from scipy import stats  # here: scipy takes a second to import, and src.report --help needs none

    if not a or not b:
        return None
    if paired(a, b):
        by_seed = dict(b)
        x = np.array([v for _, v in a], dtype=np.float64)
        y = np.array([by_seed[s] for s, _ in a], dtype=np.float64)
        d = x - y
        why = _spread_why(d)
        sd = float(np.std(d, ddof=1)) if len(d) > 1 else None
        if why:
            return Comparison(float(d.mean()), "paired", len(d), sd=sd, why=why)
        result = stats.ttest_rel(x, y)
        ci = result.confidence_interval(confidence)
        return Comparison(float(d.mean()), "paired", len(d), float(ci.low), float(ci.high), float(result.pvalue), sd)
    x = np.array([v for _, v in a], dtype=np.float64)
    y = np.array([v for _, v in b], dtype=np.float64)
    delta, n = float(x.mean() - y.mean()), min(len(x), len(y))
    if n < 2:
        return Comparison(delta, "welch", n, why="n=1")
    sd = math.hypot(np.std(x, ddof=1), np.std(y, ddof=1))
    if _flat(x) and _flat(y):
        return Comparison(delta, "welch", n, sd=sd, why="zero variance")
    result = stats.ttest_ind(x, y, equal_var=False)
    ci = result.confidence_interval(confidence)
    return Comparison(delta, "welch", n, float(ci.low), float(ci.high), float(result.pvalue), sd)


def holm(pvalues: Sequence[Optional[float]]) -> list[Optional[float]]:
    """Holm–Bonferroni adjusted p-values (Holm 1979), None kept in place: sorted ascending, the i-th of m
    (from 1) becomes max_{j ≤ i} min(1, (m − j + 1) · p_(j)). Rejecting where adjusted p ≤ α is Holm's
    step-down test: reject while p_(i) ≤ α / (m − i + 1), stop at the first that is not."""
    present = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    adjusted: list[Optional[float]] = [None] * len(pvalues)
    running, m = 0.0, len(present)
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(comparison: Optional[Comparison], adjusted_p: Optional[float], alpha: float) -> str:
    """``better`` (fewer errors) or ``worse`` where Holm rejects "no difference" at ``alpha``, else
    ``no evidence``; empty without a comparison."""
    if comparison is None:
        return ""
    if adjusted_p is None or adjusted_p > alpha:
        return "no evidence"
    return "better" if comparison.delta < 0 else "worse"


def power(delta: float, sd: float, n: Union[int, np.ndarray], alpha: float) -> np.ndarray:
    """Power of the two-sided paired t-test at n seeds when the true mean difference is ``delta`` and one
    seed's difference has standard deviation ``sd``: P(|T| > t_{1−α/2, n−1}), T ~ noncentral t with
    n − 1 degrees of freedom and noncentrality δ√n/σ."""
    from scipy import stats  # here: scipy takes a second to import, and src.report --help needs none

    n = np.asarray(n, dtype=np.float64)
    df, nc = n - 1, delta / sd * np.sqrt(n)
    critical = stats.t.ppf(1 - alpha / 2, df)
    return stats.nct.sf(critical, df, nc) + stats.nct.cdf(-critical, df, nc)


def seeds_needed(delta: float, sd: Optional[float], alpha: float, target: float = POWER,
                 cap: int = MAX_SEEDS) -> Union[int, str, None]:
    """The fewest seeds (≥ 2) at which the paired t-test has ``target`` power for the observed difference and
    standard deviation; ``">200"`` past the cap; None when the difference is 0 or the sd is unknown or 0."""
    if delta == 0 or sd is None or not math.isfinite(sd) or sd == 0 or not math.isfinite(delta):
        return None
    n = np.arange(2, cap + 1)
    enough = np.flatnonzero(power(delta, sd, n, alpha) >= target)
    return int(n[enough[0]]) if len(enough) else f">{cap}"
