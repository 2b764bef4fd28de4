"""src.report on hand-made sweep dirs: table numbers, flags, paper values, figures, bad input."""
import csv
import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf
from scipy import stats

from helpers import PNG, write_run
from src.report.questions import UNTUNED
from src.report.figures import loss_figure
from src.report.tables import group_runs, load_runs, main, table_rows

@pytest.fixture
def mnist_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    for seed, err in enumerate([1.0, 1.1, 0.9, 1.2, 0.8]):
        write_run(sweep, f"case=baseline,seed={seed}", dataset="mnist", case="baseline", seed=seed, test_error=err)
    for seed, (err, inferred) in enumerate([(0.5, 0.7), (0.6, 0.9), (0.4, 0.8)]):
        write_run(sweep, f"case=case1,seed={seed}", dataset="mnist", case="case1", seed=seed, test_error=err,
                  test_error_inferred=inferred)
    write_run(sweep, "case=case1,seed=3", dataset="mnist", case="case1", seed=3, status="failed",
              error="DivergenceError: training loss became non-finite in epoch 7")
    write_run(sweep, "case=case1,seed=4", dataset="mnist", case="case1", seed=4, status="running")
    return sweep


def test_table_has_mean_sample_std_change_vs_baseline_paper_values_and_flags(mnist_sweep, capsys):
    assert main([str(mnist_sweep)]) == 0
    printed = capsys.readouterr().out
    rows = {r["case"]: r for r in table_rows(group_runs(load_runs([mnist_sweep])))}
    base, case1 = rows["baseline"], rows["case1"]
    assert base["n"] == 5 and base["test_error_mean"] == pytest.approx(1.0)
    assert base["test_error_std"] == pytest.approx(np.std([1.0, 1.1, 0.9, 1.2, 0.8], ddof=1))
    assert base["flags"] == "" and base["paper_test_error"] == 0.93 and base["paper_test_error_std"] is None
    assert case1["n"] == 3 and case1["seeds"] == "0 1 2"  # the failed and the running run do not count
    assert case1["test_error_mean"] == pytest.approx(0.5) and case1["test_error_std"] == pytest.approx(0.1)
    assert case1["delta_vs_baseline"] == pytest.approx(-0.5)
    assert (case1["paper_test_error"], case1["paper_test_error_std"]) == (0.43, 0.03)
    assert case1["paper_delta_vs_baseline"] == pytest.approx(0.43 - 0.93)
    assert case1["flags"] == "n<5; 1 failed; 1 unfinished"
    assert case1["test_error_inferred_mean"] == pytest.approx(0.8)
    assert case1["test_error_inferred_std"] == pytest.approx(0.1)
    assert np.isnan(base["test_error_inferred_mean"])  # optional columns: only where runs wrote them

    md = (mnist_sweep / "table.md").read_text()
    assert md in printed + "\n"
    welch = stats.ttest_ind([0.5, 0.6, 0.4], [1.0, 1.1, 0.9, 1.2, 0.8], equal_var=False)  # seeds 0-2 vs 0-4
    ci = welch.confidence_interval(0.95)
    delta = f"−0.50 [{ci.low:+.2f}, {ci.high:+.2f}] ✓ better".replace("-", "−")  # p, Holm, test: a footnote line
    assert (f"| mnist | 10 | case1 | 0.50 ± 0.10 (n=3) | {delta} | 0.43 ± 0.03 ≠ 3 of 250 epochs | "
            "−0.50 ≠ 3 of 250 epochs | n<5; 1 failed; "
            "1 unfinished |") in md  # no block run has a masked error: no fair Δ column
    assert f"- mnist 10 case1: Δ p={welch.pvalue:.3g}, Holm {welch.pvalue:.3g}, welch; {UNTUNED}\n" in md
    assert "| mnist | 10 | baseline | 1.00 ± 0.16 (n=5) |  | 0.93 ≠ 3 of 250 epochs |  |  |" in md  # write_run: 3
    assert "## Without the hint?\n\n| dataset | depth | case | inferred % |\n|---|---|---|---|\n" \
           "| mnist | 10 | case1 | 0.80 ± 0.10 |\n\n" in md  # the baseline has no inferred error: no row
    assert "ddof=1" in md
    assert "Recipe beyond the paper" not in md  # no .hydra/config.yaml: nothing to say about the recipe
    assert "case=case1,seed=3` (failed): DivergenceError" in md and "case=case1,seed=4` (running)" in md
    with open(mnist_sweep / "table.csv", newline="") as f:
        csv_rows = {r["case"]: r for r in csv.DictReader(f)}
    assert float(csv_rows["case1"]["test_error_mean"]) == pytest.approx(0.5)
    assert csv_rows["case1"]["failed"] == "1" and csv_rows["case1"]["unfinished"] == "1"
    assert csv_rows["baseline"]["paper_test_error_std"] == ""


def test_paper_values_only_for_the_paper_datasets_at_the_paper_depths(tmp_path):
    sweep = tmp_path / "s"
    write_run(sweep, "a", dataset="digits", case="case1", seed=0, test_error=3.0)
    write_run(sweep, "b", dataset="svhn", case="case1", seed=0, test_error=3.0, depth=28)
    write_run(sweep, "c", dataset="svhn", case="case2", seed=0, test_error=3.0, depth=16)
    rows = {(r["dataset"], r["depth"]): r for r in table_rows(group_runs(load_runs([sweep])))}
    assert rows[("digits", 10)]["paper_test_error"] is None
    assert rows[("svhn", 28)]["paper_test_error"] == 2.53
    assert rows[("svhn", 16)]["paper_test_error"] is None
    assert np.isnan(rows[("svhn", 28)]["test_error_std"])  # one seed: no std


def test_runs_with_other_settings_form_their_own_groups(tmp_path):
    sweep = tmp_path / "s"
    for seed in (0, 1):
        run_only = ["trainer.accelerator=gpu"] if seed else ["experiment=smoke"]  # neither is a setting
        write_run(sweep, f"plain{seed}", ["case=case1", f"seed={seed}", *run_only],
                  dataset="digits", case="case1", seed=seed, test_error=2.0 + seed)
        write_run(sweep, f"lr{seed}", ["case=case1", f"seed={seed}", "optimizer.lr=0.1"],
                  dataset="digits", case="case1", seed=seed, test_error=5.0)
    rows = table_rows(group_runs(load_runs([sweep])))
    assert [(r["settings"], r["n"], r["test_error_mean"]) for r in rows] == [("", 2, 2.5), ("optimizer.lr=0.1", 2, 5.0)]
    assert main([str(sweep)]) == 0
    assert "| settings |" in (sweep / "table.md").read_text()


def test_a_preset_run_and_the_same_run_by_hand_share_a_group_and_its_baseline(tmp_path):
    sweep = tmp_path / "s"
    # SVHN: the preset's baseline, and case1 with the preset's keys typed by hand: one setting.
    write_run(sweep, "preset", ["experiment=table2_svhn", "case=baseline", "seed=0"], config=True,
              dataset="svhn", depth=28, case="baseline", seed=0, test_error=4.0)
    write_run(sweep, "by_hand", ["dataset=svhn", "dataset.val_size=0", "trainer.max_epochs=250", "test_curve=true",
                                 "case=case1", "seed=0", "trainer.accelerator=cpu"], config=True,
              dataset="svhn", depth=28, case="case1", seed=0, test_error=3.0)
    # Digits: the smoke preset and a plain run differ in epochs, validation and test curve: never averaged.
    for name, preset in (("smoke", ["experiment=smoke"]), ("plain", [])):
        write_run(sweep, name, [*preset, "case=baseline", "seed=0"], config=True, dataset="digits", depth=10,
                  case="baseline", seed=0, test_error=2.0)
    rows = table_rows(group_runs(load_runs([sweep])))
    assert [(r["dataset"], r["case"], r["settings"], r["n"]) for r in rows] == [
        ("svhn", "baseline", "", 1), ("svhn", "case1", "", 1),
        ("digits", "baseline", "dataset.val_size=0 test_curve=true trainer.max_epochs=3", 1),
        ("digits", "baseline", "dataset.val_size=0.1 test_curve=false trainer.max_epochs=30", 1)]
    assert rows[1]["delta_vs_baseline"] == pytest.approx(-1.0)


def test_the_recipe_keys_the_paper_leaves_open_are_noted_under_the_table(tmp_path, capsys):
    sweep = tmp_path / "s"
    for seed in (0, 1):
        clip = ["trainer.gradient_clip_val=null"] if seed else []
        write_run(sweep, f"r{seed}", ["experiment=table2_mnist", "case=baseline", f"seed={seed}", *clip],
                  config=True, dataset="mnist", case="baseline", seed=seed, test_error=1.0)
    write_run(sweep, "failed", ["experiment=table2_mnist", "case=case1", "optimizer.momentum=0.9"], config=True,
              dataset="mnist", case="case1", seed=0, status="failed", error="boom")
    assert main([str(sweep)]) == 0
    note = ('Recipe beyond the paper (docs/configuration.md, "Choices the paper leaves open"): gradient clipping '
            '`trainer.gradient_clip_val=1.0 / null` (the paper has none); optimiser '
            '`SGD(lr=1.0, momentum=0.0, nesterov=false, weight_decay=0.0)` (the paper names none).')
    md = (sweep / "table.md").read_text()
    assert md.split("## Notes\n\n")[1].split("\n\n")[0] == note  # the failed run's momentum is not counted
    assert note in capsys.readouterr().out


def test_several_sweep_dirs_are_reported_together(mnist_sweep, tmp_path):
    other = tmp_path / "other"
    write_run(other, "x", dataset="svhn", case="baseline", seed=0, test_error=4.0, depth=28)
    assert main([str(mnist_sweep), str(other), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "table.md").read_text()
    assert "| mnist |" in md and "| svhn | 28 | baseline | 4.00 (n=1) |" in md


def _history(train, test, key="curve/test_loss"):
    return {"train/loss": train, key: test}


def test_figures_are_pngs_with_titles_labels_and_legends(tmp_path):
    sweep = tmp_path / "s"
    rng = np.random.default_rng(0)
    for case in ("baseline", "case1", "case4"):
        for seed in (0, 1):
            aux = None
            if case != "baseline":
                superclass = rng.integers(0, 2 if case == "case1" else 3, 300)
                aux = {"score": rng.random(300) + superclass, "superclass": superclass,
                       "label": rng.integers(0, 10, 300)}
            write_run(sweep, f"{case}{seed}", dataset="mnist", case=case, seed=seed, test_error=1.0 + seed,
                      superclasses=[0, 1, 0, 1, 0, 1, 0, 1, 0, 1], aux=aux,
                      history=_history([2.0, 1.0, 0.5], [2.1, 1.2, 0.7 + seed]))
    assert main([str(sweep)]) == 0
    for name in ("loss_mnist_depth10.png", "aux_scores_mnist_depth10.png"):
        assert (sweep / name).read_bytes()[:8] == PNG
        assert matplotlib.image.imread(sweep / name).ndim == 3
    assert list((sweep / "tb").glob("events.out.tfevents.*"))

    groups = {g.case: g for g in group_runs(load_runs([sweep]))}
    fig = loss_figure("mnist", 10, "", groups)
    assert [ax.get_title() for ax in fig.axes] == ["case1 vs baseline", "case4 vs baseline"]
    assert fig.axes[0].get_xlabel() == "epoch" and "loss" in fig.axes[0].get_ylabel()
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["baseline train cross-entropy (n=2)", "baseline test cross-entropy (n=2)",
                      "case1 train cross-entropy (n=2)", "case1 test cross-entropy (n=2)"]
    assert fig.axes[0].get_ylabel() == "cross-entropy loss (log scale)"
    assert "Train and test loss" in fig._suptitle.get_text() and "Fig. 2" in fig._suptitle.get_text()
    mean_test = fig.axes[0].get_lines()[3].get_ydata()
    assert np.allclose(mean_test, [2.1, 1.2, 1.2])  # mean over the two seeds, epoch by epoch


def test_loss_figure_falls_back_to_validation_loss(tmp_path):
    sweep = tmp_path / "s"
    for case in ("baseline", "case1"):
        write_run(sweep, case, dataset="digits", case=case, seed=0, test_error=1.0,
                  history=_history([2.0, 1.0], [2.5, 1.5], key="val/loss"))
    groups = {g.case: g for g in group_runs(load_runs([sweep]))}
    fig = loss_figure("digits", 10, "", groups)
    assert "validation loss" in fig._suptitle.get_text()
    assert "case1 validation cross-entropy (n=1)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


@pytest.mark.parametrize("method, name", [("hxe", "HXE"), ("soft_labels", "soft-label KL"),
                                          ("haframe", "HAFrame CE + cosine")])
def test_loss_figure_names_each_methods_training_loss(tmp_path, method, name):
    """HXE, soft labels and HAFrame train on their own losses (scales 1/13 and 1/K of CE's): their train curves say
    which, and the axis no longer says cross-entropy; validation and test stay the main head's cross-entropy."""
    sweep = tmp_path / "s"
    write_run(sweep, "baseline", dataset="digits", case="baseline", seed=0, test_error=1.0,
              history=_history([2.0, 1.0], [2.5, 1.5], key="val/loss"))
    write_run(sweep, method, dataset="digits", case="case1", method=method, seed=0, test_error=1.0,
              history=_history([0.2, 0.1], [2.5, 1.5], key="val/loss"))
    groups = {g.label: g for g in group_runs(load_runs([sweep]))}
    fig = loss_figure("digits", 10, "", groups)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert f"{method} case1 train {name} (n=1)" in labels and "baseline train cross-entropy (n=1)" in labels
    assert f"{method} case1 validation cross-entropy (n=1)" in labels
    assert fig.axes[0].get_ylabel() == "training loss / cross-entropy (log scale)"


@pytest.mark.parametrize("make, message", [
    (lambda d: None, "is not a directory"),
    (lambda d: d.mkdir(), "no metrics.json under"),
])  # a corrupt run is listed, not an error: tests/report/test_runs.py
def test_bad_input_gives_one_line_error_and_exit_1(tmp_path, capsys, make, message):
    target = tmp_path / "sweep"
    make(target)
    assert main([str(target)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err
