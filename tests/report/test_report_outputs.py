"""What the report writes besides the statistics: CSV hygiene, eval.json, cost columns, the deltas figure and
the HPARAMS entries of its TensorBoard dir, on hand-written sweep dirs."""
import csv
import json

import matplotlib.image
import numpy as np
import pytest
from scipy import stats
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2

from src.report.figures import deltas_figure
from src.report.tables import group_runs, load_runs, main, table_rows
from src.report.tensorboard import run_entries
from src.report.runs import measures
from helpers import PNG, write_run


def _rows(sweep) -> dict:
    with open(sweep / "table.csv", newline="") as f:
        return {(r["method"], r["case"]): r for r in csv.DictReader(f)}


def test_tables_and_settings_are_not_averaged_and_mapped_metrics_say_what_they_are(tmp_path):
    sweep = tmp_path / "s"
    for seed in (0, 1):
        write_run(sweep, f"b{seed}", dataset="digits", case="baseline", seed=seed, test_error=2.0,
                  superclasses=None, eval_hierarchy=[1, 1, 1, 1, 1, 0, 0, 0, 0, 0], seeds=[0, 1, 2],
                  per_superclass_error=[3.0 + seed, 1.0], hierarchy_name="case1",
                  hierarchical_distance={"1": 0.5 + seed, "5": 1.5}, level_acc={"coarse": 97.0, "fine": 90.0 + seed},
                  test_error_heads=[5.0, 2.0], resumed_at_epoch=2)
    record = json.loads((sweep / "b0" / "metrics.json").read_text())
    assert measures(record) == {
        "test_error": 2.0, "per_superclass_error.classes_5-6-7-8-9": 3.0, "per_superclass_error.classes_0-1-2-3-4": 1.0,
        "hierarchical_distance@1": 0.5, "hierarchical_distance@5": 1.5, "level_acc.coarse": 97.0,
        "level_acc.fine": 90.0, "test_error_heads.0": 5.0, "test_error_heads.1": 2.0}
    assert main([str(sweep)]) == 0
    header = (sweep / "table.csv").read_text().splitlines()[0].split(",")
    assert not [c for c in header if c.startswith(("eval_hierarchy", "superclasses", "seeds.", "resumed_at_epoch",
                                                   "seed_", "depth_", "epochs_", "position_", "hierarchy_name"))]
    row = _rows(sweep)["baseline", "baseline"]
    assert float(row["per_superclass_error.classes_5-6-7-8-9_mean"]) == pytest.approx(3.5)
    assert float(row["hierarchical_distance@1_mean"]) == pytest.approx(1.0)
    assert float(row["level_acc.fine_std"]) == pytest.approx(np.std([90.0, 91.0], ddof=1))


def test_eval_json_replaces_metric_fields_but_not_the_status(tmp_path):
    sweep = tmp_path / "s"
    for seed in (0, 1):
        write_run(sweep, f"b{seed}", dataset="digits", case="baseline", seed=seed, test_error=2.0, ece=0.1)
        (sweep / f"b{seed}" / "eval.json").write_text(json.dumps({"test_error": 1.0 + seed, "ece": 0.3,
                                                                   "status": "failed"}))
    running = write_run(sweep, "running", dataset="digits", case="baseline", seed=2, status="running")
    (running / "eval.json").write_text(json.dumps({"test_error": 9.0}))
    broken = write_run(sweep, "broken", dataset="digits", case="baseline", seed=3, test_error=2.0)
    (broken / "eval.json").write_text("{trunc")
    assert main([str(sweep)]) == 0
    row = _rows(sweep)["baseline", "baseline"]
    assert row["n"] == "2" and float(row["test_error_mean"]) == pytest.approx(1.5)
    assert float(row["ece_mean"]) == pytest.approx(0.3)
    md = (sweep / "table.md").read_text()
    assert "2 counted runs have an eval.json" in md
    assert f"`{broken}` (finished): cannot read eval.json" in md and f"`{running}` (running)" in md


def test_speed_ratios_only_within_one_sweep_dir_and_flops_in_the_cost_columns(tmp_path):
    one, other = tmp_path / "one", tmp_path / "other"
    write_run(one, "b", dataset="digits", case="baseline", seed=0, test_error=2.0, train_images_per_s=1000.0,
              flops_per_train_image=2.0e6)
    write_run(one, "h", dataset="digits", case="case1", method="heads", seed=0, test_error=2.0,
              train_images_per_s=500.0, flops_per_train_image=3.0e6)
    write_run(other, "d", dataset="digits", case="baseline", method="dks", seed=0, test_error=2.0,
              train_images_per_s=250.0)
    assert main([str(one), str(other), "--out", str(tmp_path / "out")]) == 0
    rows = _rows(tmp_path / "out")
    assert float(rows["heads", "case1"]["train_images_per_s_vs_baseline"]) == pytest.approx(0.5)
    assert rows["dks", "baseline"]["train_images_per_s_vs_baseline"] == ""  # measured in another sweep
    md = (tmp_path / "out" / "table.md").read_text()
    assert "| img/s vs baseline | FLOPs / train image |" in md and "| 0.50× | 3e+06 |" in md
    assert "depends on the machine's load" in md


def _hparams_sessions(tb) -> dict:
    """run dir name -> the hparams of its session_start_info, read back from the event files."""
    found = {}
    for path in tb.glob("runs/*/events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    found[path.parent.name] = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                                               for k, v in data.session_start_info.hparams.items()}
    return found


def test_hparams_has_one_entry_per_counted_run_with_only_the_settings_that_vary(tmp_path):
    sweep = tmp_path / "s"
    for seed, (err, masked) in enumerate([(2.0, 1.0), (3.0, 1.5)]):
        write_run(sweep, f"case=baseline,seed={seed}", ["case=baseline", f"seed={seed}"], config=True,
                  dataset="digits", case="baseline", seed=seed, test_error=err, test_error_masked={"case1": masked})
        write_run(sweep, f"case=case1,seed={seed}", ["case=case1", f"seed={seed}"], config=True,
                  dataset="digits", case="case1", seed=seed, test_error=1.2 + seed, test_error_inferred=2.5)
    write_run(sweep, "case=case1,seed=2", ["case=case1", "seed=2"], dataset="digits", case="case1", seed=2,
              status="failed", error="boom")
    entries = {run.dir.name: (h, m) for run, h, m in run_entries(group_runs(load_runs([sweep])))}
    assert len(entries) == 4
    hparams, metrics = entries["case=case1,seed=1"]
    assert hparams == {"case": "case1", "seed": 1}  # dataset, depth, method, position and the config are alike
    assert metrics["fair_delta"] == pytest.approx(2.2 - 1.5) and metrics["delta_vs_baseline"] == pytest.approx(-0.8)
    assert metrics["test_error_inferred"] == 2.5 and "fair_delta" not in entries["case=baseline,seed=0"][1]

    assert main([str(sweep)]) == 0
    assert main([str(sweep)]) == 0  # a second report replaces the entries rather than adding to them
    sessions = _hparams_sessions(sweep / "tb")
    assert sorted(sessions) == sorted(entries)
    assert sessions["case=case1,seed=1"] == {"case": "case1", "seed": 1.0}
    assert len(list((sweep / "tb" / "runs" / "case=case1,seed=1").glob("events.*"))) == 1


def test_deltas_figure_has_points_intervals_zero_line_and_the_papers_delta(tmp_path):
    sweep = tmp_path / "s"
    base, case1, case4 = [1.0, 1.2, 0.9], [0.5, 0.8, 0.4], [0.9, 1.0, 0.95]
    for seed in range(3):
        write_run(sweep, f"b{seed}", dataset="mnist", case="baseline", seed=seed, test_error=base[seed],
                  test_error_masked={"case1": 0.3, "case4": 0.6 + seed / 10})
        write_run(sweep, f"c1{seed}", dataset="mnist", case="case1", seed=seed, test_error=case1[seed])
        write_run(sweep, f"c4{seed}", dataset="mnist", case="case4", seed=seed, test_error=case4[seed])
    assert main([str(sweep)]) == 0
    png = sweep / "deltas_mnist_depth10.png"
    assert png.read_bytes()[:8] == PNG and matplotlib.image.imread(png).ndim == 3
    rows = table_rows(group_runs(load_runs([sweep])))
    fig = deltas_figure("mnist", 10, "", rows)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["case1", "case4"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "Δ vs baseline", "fair Δ (vs the baseline's masked error)", "paper Δ (Table 2)"]
    ci = stats.ttest_rel(case1, base).confidence_interval(0.95)
    container = ax.containers[0]  # case1's Δ: the point and its whisker
    assert container.lines[0].get_xdata()[0] == pytest.approx(np.mean(np.subtract(case1, base)))
    segment = container.lines[2][0].get_segments()[0]
    assert (segment[0][0], segment[1][0]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    zero = [ln for ln in ax.get_lines() if list(ln.get_xdata()) == [0, 0]]
    assert len(zero) == 1
    paper = [ln for ln in ax.get_lines() if ln.get_marker() == "x"]
    assert [ln.get_xdata()[0] for ln in paper] == [pytest.approx(0.43 - 0.93), pytest.approx(0.69 - 0.93)]
    assert "better" in [t.get_text() for t in ax.texts]
