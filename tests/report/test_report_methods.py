"""src.report with several methods and positions (the fair comparison columns) and the probe figure."""
import csv
import math

import matplotlib.image
import numpy as np
import pytest
from scipy import stats

from src.report.figures import probe_figure
from src.report.tables import group_runs, load_runs, main, table_rows
from helpers import PNG, write_run

MASKED_BASE = {"case1": 0.4, "case2": 0.5, "case3": 0.6, "case4": 0.7}


@pytest.fixture
def methods_sweep(tmp_path):
    sweep = tmp_path / "s"
    for seed in (0, 1):
        write_run(sweep, f"baseline{seed}", dataset="digits", case="baseline", seed=seed, test_error=1.0 + seed,
                  test_error_masked={k: v + seed / 10 for k, v in MASKED_BASE.items()}, train_images_per_s=1000.0,
                  params_train=100, params_inference=100, superclass_acc=98.0)
        write_run(sweep, f"hal{seed}", dataset="digits", case="case1", method="hal", position=3, seed=seed,
                  test_error=0.3, test_error_inferred=0.8, test_error_masked={"case1": 0.2},
                  train_images_per_s=800.0, params_train=110, params_inference=100, hierarchy_mean_corr=0.5,
                  hierarchy_rf=None)
        write_run(sweep, f"hal_p1_{seed}", dataset="digits", case="case1", position=1, seed=seed, test_error=0.6,
                  test_error_masked={"case1": 0.25})
        write_run(sweep, f"dks{seed}", dataset="digits", case="case1", method="dks", seed=seed, test_error=0.9,
                  test_error_masked={"case1": 0.6, "case2": 0.7}, test_error_heads=[5.0, 0.9],
                  test_superclass_acc_heads={"stage1": 90.0})
    return sweep


def test_fair_delta_is_oracle_error_minus_the_baselines_masked_error_of_the_same_case(methods_sweep):
    assert main([str(methods_sweep)]) == 0
    rows = {(r["method"], r["position"], r["case"]): r for r in table_rows(group_runs(load_runs([methods_sweep])))}
    assert list(rows) == [("hal", 3, "baseline"), ("hal", 1, "case1"), ("hal", 3, "case1"), ("dks", 3, "case1")]
    hal, dks, p1 = rows["hal", 3, "case1"], rows["dks", 3, "case1"], rows["hal", 1, "case1"]
    assert hal["fair_delta"] == pytest.approx(0.3 - 0.45)  # baseline's masked case1 error: mean of 0.4, 0.5
    assert p1["fair_delta"] == pytest.approx(0.6 - 0.45) and p1["delta_vs_baseline"] == pytest.approx(0.6 - 1.5)
    assert math.isnan(dks["fair_delta"]) and dks["delta_vs_baseline"] == pytest.approx(0.9 - 1.5)
    assert hal["train_images_per_s_vs_baseline"] == pytest.approx(0.8)
    assert (hal["params_train_vs_baseline"], hal["params_inference_vs_baseline"]) == (10, 0)
    assert dks["test_error_heads.0_mean"] == 5.0 and dks["test_superclass_acc_heads.stage1_mean"] == 90.0

    md = (methods_sweep / "table.md").read_text()
    tables = md.split("## Notes")[0]
    assert md.splitlines()[2] == ("| dataset | depth | method | position | case | oracle test error % (mean ± std, n) "
                                  "| Δ vs baseline [95 % CI] | fair Δ [95 % CI] | flags |")
    assert "within-superclass mistakes %" not in tables and "hierarchy_rf" not in tables  # no run has them
    # Both rows have seeds 0 and 1: paired; Holm over the three Δs and, separately, the two fair Δs.
    paired = stats.ttest_rel([0.3, 0.3], [1.0, 2.0])
    ci = paired.confidence_interval(0.95)
    delta = f"−1.20 [{ci.low:+.2f}, {ci.high:+.2f}] no evidence".replace("-", "−")
    assert f"| digits | 10 | hal | 3 | case1 | 0.30 ± 0.00 (n=2) | {delta} | −0.15 [" in md
    assert f"- digits 10 hal 3 case1: Δ p={paired.pvalue:.3g}, Holm " in md  # the p-values: a line under the table
    assert "| dks | 3 | case1 | 0.90 ± 0.00 (n=2) | −0.60 [" in md
    # Without the hint? How bad are the mistakes? At what cost?
    assert "| digits | 10 | hal | 3 | case1 | 0.80 ± 0.00 | 0.20 ± 0.00 |" in md
    assert "| digits | 10 | dks | 3 | case1 |  | case1 0.60 ± 0.00; case2 0.70 ± 0.00 |" in md
    assert "| digits | 10 | hal | 3 | baseline |  | case1 0.45 ± 0.07; case2 0.55" in md
    assert "| superclass acc % | hierarchy_mean_corr |" in md and "| digits | 10 | hal | 3 | case1 |  | 0.500 ± 0.000 |" in md
    assert "| digits | 10 | hal | 3 | case1 | 0.80× | 110 / 100 (+10 / +0) | 3 |" in md
    assert "fair yardstick for the oracle protocol" in md and "same test-time hint" in md
    assert "paper Δ" not in tables
    with open(methods_sweep / "table.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert float(csv_rows[2]["fair_delta"]) == pytest.approx(-0.15)
    assert float(csv_rows[0]["test_error_masked.case3_mean"]) == pytest.approx(0.65)


def test_plain_hal_sweeps_keep_the_paper_table(tmp_path):
    sweep = tmp_path / "s"
    write_run(sweep, "b", dataset="mnist", case="baseline", seed=0, test_error=1.0, test_error_masked=MASKED_BASE)
    write_run(sweep, "c", dataset="mnist", case="case1", method="hal", position=3, seed=0, test_error=0.5)
    assert main([str(sweep)]) == 0
    md = (sweep / "table.md").read_text()
    assert md.startswith("## Does it help?\n\n| dataset | depth | case | test error % (mean ± std, n) | Δ vs baseline "
                         "[95 % CI] | paper | paper Δ | fair Δ [95 % CI] | flags |")
    # The Table 2 layout has the fair yardstick too; one seed on each side: no interval and no p.
    assert ("| mnist | 10 | case1 | 0.50 (n=1) | −0.50 no evidence | 0.43 ± 0.03 ≠ 3 of 250 epochs | −0.50 ≠ 3 of 250 epochs "
            "| +0.10 no evidence |") in md  # 0.5 − the baseline's masked case1 0.4
    assert "- mnist 10 case1: Δ no p; fair Δ no p" in md
    assert "| mnist | 10 | baseline | case1 0.40; case2 0.50; case3 0.60; case4 0.70 |" in md


def _probe_history(offset: float, epochs: int = 3) -> dict:
    history = {"train/loss": [1.0] * epochs}
    for stage in (1, 2, 3):
        history[f"probe/stage{stage}_superclass_acc"] = [50 + 10 * stage + e + offset for e in range(epochs)]
        history[f"probe/stage{stage}_class_acc"] = [20 + 10 * stage + e + offset for e in range(epochs)]
    return history


def test_probe_figure_has_one_line_per_stage_and_group_and_names_the_split(tmp_path):
    sweep = tmp_path / "s"
    for seed in (0, 1):
        write_run(sweep, f"b{seed}", dataset="digits", case="baseline", seed=seed, test_error=1.0,
                  probe_split="validation", history=_probe_history(2.0 * seed))
        write_run(sweep, f"h{seed}", dataset="digits", case="case1", method="heads", seed=seed, test_error=1.0,
                  probe_split="validation", history=_probe_history(5.0))
    write_run(sweep, "noprobe", dataset="digits", case="case2", seed=0, test_error=1.0,
              history={"train/loss": [1.0, 0.5]})
    assert main([str(sweep)]) == 0
    png = sweep / "probes_digits_depth10.png"
    assert png.read_bytes()[:8] == PNG and matplotlib.image.imread(png).ndim == 3

    groups = {g.label: g for g in group_runs(load_runs([sweep]))}
    fig = probe_figure("digits", 10, "", groups)
    # A row per group, superclass and class side by side; a line (colour) per stage.
    assert [ax.get_title() for ax in fig.axes] == [
        "baseline: superclass probe (n=2)", "baseline: class probe (n=2)",
        "heads case1: superclass probe (n=2)", "heads case1: class probe (n=2)"]
    assert fig.axes[-1].get_xlabel() == "epoch" and "accuracy" in fig.axes[0].get_ylabel()
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [f"stage {k}" for k in (1, 2, 3)]
    line = fig.axes[0].get_lines()[0]  # baseline, stage 1, superclass: mean of the two seeds, epochs from 1
    assert np.allclose(line.get_xdata(), [1, 2, 3]) and np.allclose(line.get_ydata(), [61, 62, 63])
    assert len({ln.get_color() for ln in fig.axes[0].get_lines()}) == 3
    assert "scored on the validation split" in fig._suptitle.get_text()
    assert probe_figure("digits", 10, "", {"case2": groups["case2"]}) is None


def test_the_tables_show_the_mistake_metrics_and_crm(tmp_path):
    sweep = tmp_path / "s"
    for seed in (0, 1):
        write_run(sweep, f"hal{seed}", dataset="cifar100", case="coarse", seed=seed, test_error=30.0,
                  test_error_crm=40.0 + seed, mistake_severity=2.0 + seed, hierarchical_distance={"1": 1.0, "5": 2.0,
                  "20": 3.0 + seed}, ece=0.1, level_acc={"class": 70.0, "coarse": 80.0}, hierarchy_name="cifar100")
    assert main([str(sweep)]) == 0
    md = (sweep / "table.md").read_text()
    assert ("## How bad are the mistakes?\n\n| dataset | depth | case | mistake severity | HD@1 | HD@5 | HD@20 | ECE "
            "| top-1 acc % | coarse acc % |") in md
    assert "| 2.500 ± 0.707 | 1.000 ± 0.000 | 2.000 ± 0.000 | 3.500 ± 0.707 | 0.100 ± 0.000 | 70.00 ± 0.00 |" in md
    assert "## Without the hint?\n\n| dataset | depth | case | CRM % |\n|---|---|---|---|\n| cifar100 | 10 | coarse " \
           "| 40.50 ± 0.71 |" in md
    assert "| cifar100 | 10 | coarse |" in md and "hierarchy_name" in md
    with open(sweep / "table.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert float(row["level_acc.coarse_mean"]) == 80.0
    write_run(sweep, "dks0", dataset="cifar100", case="baseline", method="dks", seed=0, test_error=31.0,
              test_error_crm=35.0)
    assert main([str(sweep)]) == 0
    md = (sweep / "table.md").read_text()  # the methods layout: CRM among the no-hint protocols
    assert "## Without the hint?\n\n| dataset | depth | method | case | CRM % |\n" in md
    assert "| cifar100 | 10 | dks | baseline | 35.00 |" in md


def test_fair_delta_of_a_case2_run_is_against_the_baselines_case2_masked_error_in_rows_and_tensorboard(methods_sweep):
    """One definition (``src.report.rows.delta_baselines``) for the table and TensorBoard's HPARAMS. The baseline's
    masked errors differ per case (case1 0.4, case2 0.5, + seed/10): a case2 run is measured against case2's."""
    from src.report.tensorboard import run_entries

    for seed in (0, 1):
        write_run(methods_sweep, f"hal_case2_{seed}", dataset="digits", case="case2", method="hal", position=3,
                  seed=seed, test_error=0.35, test_error_masked={"case2": 0.3})
    groups = group_runs(load_runs([methods_sweep]))
    row = next(r for r in table_rows(groups) if r["case"] == "case2")
    assert row["fair_delta"] == pytest.approx(0.35 - (0.5 + 0.6) / 2)          # not 0.35 − 0.45 (case1's)
    metrics = {run.dir.name: m for run, _, m in run_entries(groups)}
    assert metrics["hal_case2_0"]["fair_delta"] == pytest.approx(0.35 - 0.5)      # the same seed's baseline
    assert metrics["hal_case2_1"]["fair_delta"] == pytest.approx(0.35 - 0.6)
    assert metrics["hal1"]["fair_delta"] == pytest.approx(0.3 - 0.5)             # case1: 0.4 + 1/10
