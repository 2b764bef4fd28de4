"""Issue 36 §7 (--format latex, the long CSV) and §8 (table.csv labels the plain network "baseline")."""
import csv

import pytest

from helpers import write_run
from src.report.tables import main


BASELINE = [3.0, 3.1, 3.4]


@pytest.fixture
def sweep(tmp_path):
    sweep = tmp_path / "s"
    for case, errors in (("baseline", BASELINE), ("case1", [2.0, 2.3, 2.5])):
        for seed, error in enumerate(errors):
            write_run(sweep, f"{case}{seed}", dataset="mnist", case=case, seed=seed, depth=10, test_error=error)
    return sweep


def test_latex_has_one_booktabs_table_per_question_with_the_verdict_marks(sweep, capsys):
    assert main([str(sweep), "--format", "latex"]) == 0
    tex = (sweep / "table.tex").read_text()
    md = (sweep / "table.md").read_text()
    questions = [line[3:] for line in md.splitlines() if line.startswith("## ") and line != "## Notes"]
    assert tex.count(r"\begin{table}") == len(questions) == tex.count(r"\toprule") == tex.count(r"\bottomrule")
    assert r"\caption{Does it help?}" in tex
    assert "✓" in md and r"\ding{51}" in tex  # case1 is 0.8 to 1.0 lower on every seed: paired, a verdict
    assert r"$\pm$" in tex and "±" not in tex.split("\n", 1)[1]  # no raw Unicode left in the tables
    assert r"test error \% (mean $\pm$ std, n)" in tex
    assert capsys.readouterr().out.startswith("% python -m src.report --format latex")


def test_the_long_csv_has_one_row_per_group_and_metric_and_pandas_reads_it(sweep):
    assert main([str(sweep)]) == 0
    with open(sweep / "table_long.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by = {(r["case"], r["metric"]): r for r in rows}
    assert len(by) == len(rows)  # one row per group × metric
    base = by[("baseline", "test_error")]
    assert float(base["mean"]) == pytest.approx(sum(BASELINE) / 3) and base["n"] == "3"
    delta = by[("case1", "delta_vs_baseline")]
    assert float(delta["mean"]) == pytest.approx(-0.9) and delta["test"] == "paired"
    assert float(delta["p_holm"]) >= float(delta["p"]) and delta["verdict"] == "better"
    pd = pytest.importorskip("pandas")
    frame = pd.read_csv(sweep / "table_long.csv")
    assert list(frame.columns[:7]) == ["dataset", "depth", "settings", "method", "position", "case", "metric"]
    assert frame["mean"].dtype.kind == "f" and frame["p"].dtype.kind == "f"


def test_table_csv_calls_the_plain_network_baseline(sweep):
    assert main([str(sweep)]) == 0
    with open(sweep / "table.csv", newline="") as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    assert (rows["baseline"]["method"], rows["baseline"]["position"]) == ("baseline", "")
    assert (rows["case1"]["method"], rows["case1"]["position"]) == ("hal", "3")
