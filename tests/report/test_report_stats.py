"""The report's statistics on hand-written sweep dirs, checked against scipy.stats computed here directly:
t-intervals, paired and Welch tests, n = 1 and 2, zero variance, failed runs, Holm, the power figure, --alpha."""
import csv
import math

import numpy as np
import pytest
from scipy import stats

from src.report.tables import group_runs, load_runs, main, table_rows
from src.report.stats import compare, holm, power, seeds_needed, t_interval
from helpers import write_run

BASE = [1.0, 1.4, 0.9]  # baseline test error of seeds 0, 1, 2
MASKED = [0.6, 0.7, 0.5]  # the baseline's masked case1 error of seeds 0, 1, 2


def _baseline(sweep, seeds=(0, 1, 2), errors=BASE, masked=MASKED):
    for seed, err, m in zip(seeds, errors, masked):
        write_run(sweep, f"baseline{seed}", dataset="digits", case="baseline", seed=seed, test_error=err,
                  test_error_masked={"case1": m, "case4": m + 0.1})


def _case(sweep, case, errors, seeds=None, method="hal", **extra):
    for seed, err in zip(seeds or range(len(errors)), errors):
        write_run(sweep, f"{method}_{case}{seed}", dataset="digits", case=case, method=method, seed=seed,
                  test_error=err, **extra)


def _csv(sweep) -> dict:
    with open(sweep / "table.csv", newline="") as f:
        return {(r["method"], r["case"]): r for r in csv.DictReader(f)}


def _t_ci(values):
    """mean ± t_{0.975, n-1} · s / √n, written out."""
    x = np.asarray(values)
    half = stats.t.ppf(0.975, len(x) - 1) * np.std(x, ddof=1) / math.sqrt(len(x))
    return x.mean() - half, x.mean() + half


def test_paired_rows_use_the_per_seed_differences_and_unpaired_rows_welch(tmp_path):
    sweep = tmp_path / "s"
    _baseline(sweep)
    case1 = [0.5, 0.9, 0.3]
    _case(sweep, "case1", case1)  # seeds 0-2, as the baseline: paired
    _case(sweep, "case1", case1 + [0.4], method="hal_heads")  # seeds 0-3: Welch
    write_run(sweep, "failed3", dataset="digits", case="case1", seed=3, status="failed", error="boom")
    assert main([str(sweep)]) == 0
    rows = _csv(sweep)
    hal, heads = rows["hal", "case1"], rows["hal_heads", "case1"]

    low, high = _t_ci(case1)
    assert float(hal["test_error_ci_low"]) == pytest.approx(low) and float(hal["test_error_ci_high"]) == pytest.approx(high)
    # Paired: the failed seed 3 does not count, so both rows have seeds 0-2.
    diffs = np.subtract(case1, BASE)
    low, high = _t_ci(diffs)
    assert hal["test"] == "paired" and float(hal["delta_vs_baseline"]) == pytest.approx(diffs.mean())
    assert (float(hal["delta_ci_low"]), float(hal["delta_ci_high"])) == (pytest.approx(low), pytest.approx(high))
    assert float(hal["delta_p"]) == pytest.approx(stats.ttest_rel(case1, BASE).pvalue)
    fair = np.subtract(case1, MASKED)
    low, high = _t_ci(fair)
    assert hal["fair_test"] == "paired" and float(hal["fair_delta"]) == pytest.approx(fair.mean())
    assert (float(hal["fair_delta_ci_low"]), float(hal["fair_delta_ci_high"])) == (pytest.approx(low),
                                                                                    pytest.approx(high))
    assert float(hal["fair_delta_p"]) == pytest.approx(stats.ttest_rel(case1, MASKED).pvalue)

    # Welch: the difference of the means, Welch–Satterthwaite degrees of freedom.
    mine = case1 + [0.4]
    va, vb = np.var(mine, ddof=1) / 4, np.var(BASE, ddof=1) / 3
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    delta = np.mean(mine) - np.mean(BASE)
    assert heads["test"] == "welch" and float(heads["delta_vs_baseline"]) == pytest.approx(delta)
    assert float(heads["delta_ci_low"]) == pytest.approx(delta - half)
    assert float(heads["delta_ci_high"]) == pytest.approx(delta + half)
    assert float(heads["delta_p"]) == pytest.approx(stats.ttest_ind(mine, BASE, equal_var=False).pvalue)
    assert float(heads["delta_p"]) == pytest.approx(2 * stats.t.sf(abs(delta) / math.sqrt(va + vb), df))
    assert float(heads["fair_delta_p"]) == pytest.approx(stats.ttest_ind(mine, MASKED, equal_var=False).pvalue)
    assert rows["baseline", "baseline"]["test"] == "" and rows["baseline", "baseline"]["delta_p"] == ""


def test_one_seed_and_zero_variance_give_empty_cells_and_a_flag_two_seeds_give_scipy_values(tmp_path):
    sweep = tmp_path / "s"
    _baseline(sweep, seeds=(0, 1), errors=[1.0, 1.6], masked=[0.5, 0.8])
    _case(sweep, "case1", [0.7])  # n = 1 (seed 0): Welch with one seed
    _case(sweep, "case4", [0.4, 1.0])  # the baseline − 0.6 on both seeds: zero variance of the differences
    _case(sweep, "case2", [0.2, 1.1])  # n = 2, paired, df = 1
    assert main([str(sweep)]) == 0
    rows = _csv(sweep)
    one, flat, two = rows["hal", "case1"], rows["hal", "case4"], rows["hal", "case2"]
    for key in ("test_error_ci_low", "delta_ci_low", "delta_ci_high", "delta_p", "fair_delta_p", "seeds_needed"):
        assert one[key] == "", key
    assert one["test"] == "welch" and float(one["delta_vs_baseline"]) == pytest.approx(0.7 - 1.3)
    assert one["verdict"] == "no evidence" and "no interval (n=1): test error, Δ, fair Δ" in one["flags"]
    assert flat["delta_p"] == "" and flat["delta_ci_low"] == "" and flat["test"] == "paired"
    assert float(flat["delta_vs_baseline"]) == pytest.approx(-0.6) and flat["seeds_needed"] == ""
    assert "no interval (zero variance): Δ" in flat["flags"]
    assert float(flat["fair_delta_p"]) == pytest.approx(stats.ttest_rel([0.4, 1.0], [0.6, 0.9]).pvalue)
    low, high = _t_ci(np.subtract([0.2, 1.1], [1.0, 1.6]))
    assert (float(two["delta_ci_low"]), float(two["delta_ci_high"])) == (pytest.approx(low), pytest.approx(high))
    assert float(two["delta_p"]) == pytest.approx(stats.ttest_rel([0.2, 1.1], [1.0, 1.6]).pvalue)
    text = (sweep / "table.csv").read_text()
    assert "nan" not in text.lower()
    md = (sweep / "table.md").read_text()
    assert "| −0.60 no evidence |" in md and "| −0.60 [" not in md
    assert "- digits 10 case4: Δ no p; fair Δ p=" in md  # p-values in a line under the table


def test_holm_adjusts_in_order_and_stops_at_the_first_p_above_its_threshold():
    # m = 3: thresholds α/3, α/2, α for the smallest, middle and largest p.
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # 3·0.01; max(2·0.03, ·); max(0.04, 0.06)
    assert holm([0.02, 0.001, 0.03]) == pytest.approx([0.04, 0.003, 0.04])
    assert holm([None, 0.2, None]) == [None, 0.2, None]  # rows without p do not count in m
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_holm_verdicts_across_three_rows_of_one_table(tmp_path):
    sweep = tmp_path / "s"
    masked = {"case1": MASKED, "case2": [0.9, 1.2, 0.6], "case4": [0.4, 0.9, 0.5]}  # the baseline's, per case
    for seed, err in enumerate(BASE):
        write_run(sweep, f"baseline{seed}", dataset="digits", case="baseline", seed=seed, test_error=err,
                  test_error_masked={case: m[seed] for case, m in masked.items()})
    arms = {"case1": [0.1, 0.6, 0.0], "case2": [1.3, 1.9, 1.3], "case4": [0.9, 1.2, 0.8]}
    for case, errors in arms.items():
        _case(sweep, case, errors)
    rows = {r["case"]: r for r in table_rows(group_runs(load_runs([sweep]))) if r["case"] != "baseline"}
    p = {c: stats.ttest_rel(e, BASE).pvalue for c, e in arms.items()}
    order = sorted(p, key=p.get)
    assert order == ["case1", "case2", "case4"]  # the numbers above were chosen for this order
    assert p["case1"] <= 0.05 / 3 and p["case2"] <= 0.05 / 2 < p["case2"] * 3  # case2 passes only as second
    assert p["case4"] > 0.05
    for rank, case in enumerate(order):
        assert rows[case]["delta_p"] == pytest.approx(p[case])
        assert rows[case]["delta_p_holm"] == pytest.approx(max(min(1, (3 - k) * p[c]) for k, c in enumerate(order[:rank + 1])))
    assert [rows[c]["verdict"] for c in order] == ["better", "worse", "no evidence"]
    # The fair Δs form their own family of three, each against the baseline's masked error of its own case.
    fair = {c: stats.ttest_rel(e, masked[c]).pvalue for c, e in arms.items()}
    fair_order = sorted(fair, key=fair.get)
    for rank, case in enumerate(fair_order):
        assert rows[case]["fair_delta"] == pytest.approx(np.mean(np.subtract(arms[case], masked[case])))
        assert rows[case]["fair_delta_p"] == pytest.approx(fair[case])
        assert rows[case]["fair_delta_p_holm"] == pytest.approx(
            max(min(1, (3 - k) * fair[c]) for k, c in enumerate(fair_order[:rank + 1])))
    assert rows["case4"]["seeds_needed"] == seeds_needed(np.mean(np.subtract(arms["case4"], BASE)),
                                                         np.std(np.subtract(arms["case4"], BASE), ddof=1), 0.05)
    assert rows["case1"]["seeds_needed"] is None  # only for rows without evidence


def test_holm_carries_a_larger_adjusted_p_down_the_table(tmp_path):
    """Holm's monotone step decides a verdict: case2's own 2·p is under α, but case1's 3·p, above it, carries."""
    sweep = tmp_path / "s"
    _baseline(sweep)
    arms = {"case1": [0.2, 0.3, 0.2], "case2": [0.0, 0.4, 0.3], "case4": [0.9, 1.2, 0.8]}
    for case, errors in arms.items():
        _case(sweep, case, errors)
    rows = {r["case"]: r for r in table_rows(group_runs(load_runs([sweep]))) if r["case"] != "baseline"}
    p = {c: stats.ttest_rel(e, BASE).pvalue for c, e in arms.items()}
    assert p["case1"] < p["case2"] < p["case4"]  # the numbers above were chosen for this order and these steps
    assert 2 * p["case2"] <= 0.05 < 3 * p["case1"]
    assert rows["case1"]["delta_p_holm"] == pytest.approx(3 * p["case1"])
    assert rows["case2"]["delta_p_holm"] == pytest.approx(3 * p["case1"])  # not 2 · p["case2"]
    assert [rows[c]["verdict"] for c in arms] == ["no evidence"] * 3


def _power_direct(delta, sd, n, alpha):
    df, nc = n - 1, delta * math.sqrt(n) / sd
    c = stats.t.ppf(1 - alpha / 2, df)
    return 1 - stats.nct.cdf(c, df, nc) + stats.nct.cdf(-c, df, nc)


@pytest.mark.parametrize("delta, sd", [(0.3, 0.5), (-0.2, 0.1), (1.0, 3.0)])
def test_seeds_needed_is_the_first_n_with_80_percent_power_by_scipy_nct(delta, sd):
    n = seeds_needed(delta, sd, 0.05)
    assert isinstance(n, int) and n >= 2
    assert _power_direct(delta, sd, n, 0.05) >= 0.8
    assert n == 2 or _power_direct(delta, sd, n - 1, 0.05) < 0.8
    assert power(delta, sd, n, 0.05) == pytest.approx(_power_direct(delta, sd, n, 0.05))


def test_seeds_needed_is_capped_and_empty_without_a_difference():
    assert _power_direct(0.01, 1.0, 200, 0.05) < 0.8
    assert seeds_needed(0.01, 1.0, 0.05) == ">200"
    assert seeds_needed(0.0, 1.0, 0.05) is None and seeds_needed(0.5, None, 0.05) is None
    assert seeds_needed(0.5, 0.0, 0.05) is None


def test_pure_functions_agree_with_scipy():
    x = [2.0, 2.5, 1.8, 2.2]
    iv = t_interval(x)
    assert (iv.low, iv.high) == pytest.approx(_t_ci(x)) and iv.why == ""
    assert t_interval([1.0]).why == "n=1" and t_interval([1.0, 1.0]).why == "zero variance"
    a, b = [(0, 1.0), (1, 2.0), (2, 4.0)], [(2, 3.0), (0, 0.5), (1, 1.0)]  # same seeds, other order
    c = compare(a, b)
    assert c.test == "paired" and c.p == pytest.approx(stats.ttest_rel([1.0, 2.0, 4.0], [0.5, 1.0, 3.0]).pvalue)
    repeated = compare([(0, 1.0), (0, 2.0)], [(0, 1.5), (1, 1.0)])
    assert repeated.test == "welch"  # a repeated seed cannot be paired
    assert compare([], b) is None


def test_alpha_changes_the_verdicts_and_a_bad_alpha_is_one_line(tmp_path, capsys):
    sweep = tmp_path / "s"
    _baseline(sweep)
    _case(sweep, "case4", [0.9, 1.2, 0.8])
    p = stats.ttest_rel([0.9, 1.2, 0.8], BASE).pvalue
    assert 0.05 < p < 0.5
    assert main([str(sweep)]) == 0 and _csv(sweep)["hal", "case4"]["verdict"] == "no evidence"
    assert main([str(sweep), "--alpha", "0.5"]) == 0 and _csv(sweep)["hal", "case4"]["verdict"] == "better"
    assert "α = 0.5" in (sweep / "table.md").read_text()
    capsys.readouterr()
    assert main([str(sweep), "--alpha", "1.5"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: --alpha must lie between 0 and 1, not 1.5"
