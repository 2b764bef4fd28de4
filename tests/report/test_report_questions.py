"""The report's question tables, the random-tree control and the trade-off figure, on hand-made runs."""
import csv
import math

import numpy as np
import pytest
from scipy import stats

from report_sweeps import methods_digits_sweep, write_config
from src.report.tables import markdown, methods_shown, write_csv
from src.report.control import add_tree_columns, copied_case, tree_tables
from src.report.questions import MAX_COLUMNS, delta_cell, question_tables
from src.report.tradeoff import points, tradeoff_figure
from src.report.rows import table_rows
from src.report.runs import group_runs, load_runs
from helpers import write_run


def _rows(sweep):
    runs = load_runs([sweep])
    groups = group_runs(runs)
    rows = table_rows(groups)
    add_tree_columns(groups, rows, 0.05)
    return runs, groups, rows


def _table_lines(md: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("|")]


def test_no_table_is_wider_than_ten_columns_and_every_measure_is_shown(tmp_path):
    sweep = methods_digits_sweep(tmp_path / "s", curves=False)
    # A second setting and a second position: the widest identity (dataset, depth, settings, method, position, case)
    for seed in range(2):
        run = write_run(sweep, f"p1_{seed}", dataset="digits", method="hal", case="case1", position=1, seed=seed,
                        test_error=1.0, mistake_severity=1.5, hierarchical_distance={"1": 0.1, "5": 1.0, "20": 2.0},
                        level_acc={"class": 99.0, "coarse": 99.5, "fine": 99.2}, ece=0.1, mce=0.3)
        write_config(run, "hal", {"name": "case1"})
        (run / ".hydra" / "config.yaml").write_text((run / ".hydra" / "config.yaml").read_text()
                                                    .replace("max_epochs: 4", "max_epochs: 8"))
    runs, groups, rows = _rows(sweep)
    md = markdown(rows, runs, methods_shown(groups))
    lines = _table_lines(md)
    assert lines and max(line.count(" | ") + 1 for line in lines) <= MAX_COLUMNS
    headers = [line for line in lines if line.startswith("| dataset | depth | settings | method | position | case |")]
    assert len(headers) == md.count("\n## ") and len(headers) >= 6  # every table, mistakes split in parts
    shown = {cell.strip() for header in headers for cell in header.strip("|").split("|")}
    for column in ("mistake severity", "CRM severity", "HD@1", "HD@5", "HD@20", "ECE", "MCE", "top-1 acc %",
                   "coarse acc %", "fine acc %", "superclass acc %", "within-superclass mistakes %",
                   "hierarchy_mean_corr", "hierarchy_rf", "inferred %", "shuffled %", "CRM %", "masked %",
                   "img/s vs baseline", "FLOPs / train image", "params train / inference (vs baseline)", "epochs",
                   "tree Δ [95 % CI]", "severity Δ [95 % CI]", "flags"):
        assert column in shown, column
    assert "## How bad are the mistakes? (continued, 2)" in md


def test_delta_cell_has_the_interval_and_a_mark_and_the_p_values_go_below():
    row = {"d": -0.8, "d_ci_low": -1.031, "d_ci_high": -0.578, "verdict": "better", "d_p": 0.004}
    assert delta_cell(row, "d", "d", "") == "−0.80 [−1.03, −0.58] ✓ better"
    assert delta_cell({**row, "verdict": "worse", "d": 0.5}, "d", "d", "") == "+0.50 [−1.03, −0.58] ✗ worse"
    assert delta_cell({**row, "d_ci_low": None, "verdict": "no evidence"}, "d", "d", "") == "−0.80 no evidence"
    assert delta_cell({**row, "d": math.nan}, "d", "d", "") == ""


def test_random_tree_runs_meet_the_same_method_on_the_real_tree(tmp_path):
    sweep = methods_digits_sweep(tmp_path / "s", arms={"baseline", "hal_case1", "hal_random_case1", "heads_case4",
                                                       "heads_random_case4"}, curves=False)
    runs, groups, rows = _rows(sweep)
    by_case = {(r["method"], r["case"]): r for r in rows}
    assert {r["settings"] for r in rows} == {""}  # case.of and case.shuffle_seed group runs, they are no setting
    random_hal, random_heads = by_case["hal", "random(case1)"], by_case["heads", "random(case4)"]
    assert copied_case("random(case1)") == "case1" and copied_case("case1") is None
    assert random_hal["shuffle_seeds"] == "0 1 2 3 4" and random_hal["n"] == 5

    def values(case, method, name):
        g = next(g for g in groups if (g.method, g.case) == (method, case))
        return [v for _, v in sorted(g.values(name))]

    p = []
    for (method, case), row in (("hal", "case1"), random_hal), (("heads", "case4"), random_heads):
        real, random = values(case, method, "test_error"), values(f"random({case})", method, "test_error")
        test = stats.ttest_rel(real, random)  # the same seeds on both sides: paired, real − random
        assert row["tree_delta"] == pytest.approx(np.mean(np.subtract(real, random)))
        assert row["tree_delta_p"] == pytest.approx(test.pvalue) and row["tree_test"] == "paired"
        ci = test.confidence_interval(0.95)
        assert (row["tree_delta_ci_low"], row["tree_delta_ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
        assert row["real_tree_test_error_mean"] == pytest.approx(np.mean(real))
        severity = stats.ttest_rel(values(case, method, "mistake_severity"),
                                   values(f"random({case})", method, "mistake_severity"))
        assert row["tree_severity_delta_p"] == pytest.approx(severity.pvalue)
        p.append(test.pvalue)
    # Holm over the two rows of this table: the smaller p doubled, the larger kept (never below the first)
    small, large = sorted(p)
    holm = {small: min(1, 2 * small), large: max(min(1, 2 * small), large)}
    for row, value in zip((random_hal, random_heads), p):
        assert row["tree_delta_p_holm"] == pytest.approx(holm[value])
        assert row["tree_verdict"] == ("better" if holm[value] <= 0.05 and row["tree_delta"] < 0 else
                                       "worse" if holm[value] <= 0.05 else "no evidence")
    assert random_hal["tree_verdict"] == "better"  # the fixture's random tree costs HAL 0.6 points on every seed
    for row in rows:
        if not row["case"].startswith("random("):
            assert math.isnan(row["tree_delta"]) and row["tree_verdict"] == ""
    (table,) = tree_tables(rows)
    assert table.header[:4] == ["dataset", "depth", "method", "case"] and len(table.cells) == 2
    assert table.cells[0][2:4] == ["hal", "case1"] and "✓ real tree better" in table.cells[0][6]


def test_table_csv_keeps_its_columns_and_adds_the_controls_beside_them(tmp_path):
    plain = methods_digits_sweep(tmp_path / "plain", random_tree=False, arms={"baseline", "hal_case1"}, curves=False)
    with_random = methods_digits_sweep(tmp_path / "random", arms={"baseline", "hal_case1", "hal_random_case1"},
                                       curves=False)
    for sweep in (plain, with_random):
        runs, groups, rows = _rows(sweep)
        before = list(table_rows(groups)[0])  # the columns table.csv had before the control
        write_csv(rows, sweep / "table.csv")
        with open(sweep / "table.csv", newline="") as f:
            header = next(csv.reader(f))
        assert header[:len(before)] == before  # every earlier column, in its place; the control's after them
        assert {"tree_delta", "tree_delta_p_holm", "tree_verdict", "tree_severity_delta"} <= set(header)


def test_tradeoff_points_are_top1_error_and_severity_with_intervals_on_both_axes(tmp_path):
    sweep = methods_digits_sweep(tmp_path / "s", arms={"baseline", "hal_case1", "dks"}, curves=False)
    _, groups, _ = _rows(sweep)
    hal = next(g for g in groups if g.case == "case1")
    (protocol, errors, severities), (crm, crm_errors, crm_severities) = points(hal)
    assert (protocol, crm) == ("inferred", "crm")  # the runs' eval.metrics_protocol; HAL has the block
    runs = sorted(hal.finished, key=lambda r: r.seed)
    assert errors == pytest.approx([100 - r.record["level_acc"]["class"] for r in runs])
    assert severities == pytest.approx([r.record["mistake_severity"] for r in runs])
    assert crm_errors == pytest.approx([r.record["test_error_crm"] for r in runs])
    assert crm_severities == pytest.approx([r.record["mistake_severity_crm"] for r in runs])
    base = next(g for g in groups if g.is_baseline)
    assert points(base)[0][0] == "plain"  # no block: the network's own prediction

    fig = tradeoff_figure("digits, depth 10", groups)
    ax = fig.axes[0]
    markers = [line for line in ax.lines if line.get_marker() in ("o", "s", "^") and len(line.get_xdata()) == 1]
    assert len(markers) == 6  # two points for each of three groups
    x, y = np.mean(errors), np.mean(severities)
    (hal_inferred,) = [m for m in markers if m.get_xdata()[0] == pytest.approx(x) and m.get_ydata()[0] == pytest.approx(y)]
    assert hal_inferred.get_marker() == "s" and hal_inferred.get_markerfacecolor() == "white"  # no hint: hollow
    half = stats.t.ppf(0.975, len(errors) - 1) * stats.sem(errors)
    whiskers = [c for c in ax.collections if len(c.get_segments()) == 1 and
                np.allclose(c.get_segments()[0][:, 1], y) and np.allclose(c.get_segments()[0][:, 0], [x - half, x + half])]
    assert whiskers, "the top-1 error's 95 % t-interval is drawn"
    assert "mistake severity" in ax.get_ylabel() and "top-1 error" in ax.get_xlabel()
    assert tradeoff_figure("none", [g for g in groups if False]) is None


def test_questions_without_any_row_are_left_out(tmp_path):
    sweep = tmp_path / "s"
    write_run(sweep, "b", dataset="mnist", case="baseline", seed=0, test_error=1.0)
    _, groups, rows = _rows(sweep)
    assert [t.question for t in question_tables(rows, methods=False)] == ["Does it help?", "At what cost?"]


def test_no_table_shows_a_header_twice_when_the_tree_has_a_superclass_level(tmp_path):
    """superclass_acc (the run's case) and level_acc.superclass (the eval tree's level named superclass) are two
    columns with two names; a case2 run shows why: its case's superclasses are not the eval tree's."""
    sweep = tmp_path / "s"
    for seed in range(2):
        for case, level in (("case1", 99.0), ("case2", 90.0)):
            write_run(sweep, f"{case}_{seed}", dataset="digits", method="hal", case=case, seed=seed, test_error=1.0,
                      superclass_acc=98.0, level_acc={"class": 97.0, "superclass": level}, mistake_severity=1.5)
    runs, groups, rows = _rows(sweep)
    tables = question_tables(rows, methods_shown(groups))
    for table in tables:
        assert len(table.header) == len(set(table.header)), table.header
    headers = {h for t in tables for h in t.header}
    assert {"superclass acc %", "superclass acc % (eval tree)"} <= headers
