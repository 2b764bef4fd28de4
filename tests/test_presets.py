"""The experiment group holds presets only; the digits presets; the debug presets."""
import csv
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from helpers import CONF, FAST, HandScore, compose_cfg
from src.run.resume import finished_record
from src.run.summary import sweep_summary

TUNE_PRESETS = ["tune_cifar10", "tune_digits", "tune_methods_digits", "tune_mnist"]  # python -m src.tune's (tests/tuning/)
PRESETS = sorted(p.stem for p in Path(CONF, "experiment").glob("*.yaml") if p.stem not in TUNE_PRESETS)
SEEDS = ["0", "1", "2", "3", "4"]


def compose_with_hydra(overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def sweep_values(params) -> dict[str, list[str]]:
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return {o.key_or_group: list(o.sweep_string_iterator()) for o in parsed}


def test_the_experiment_group_lists_exactly_the_presets():
    assert PRESETS == ["methods_aircraft", "methods_cifar10", "methods_cifar100", "methods_digits", "methods_inat19",
                       "methods_inat21_mini", "methods_mnist", "methods_svhn", "methods_tiered_imagenet", "smoke",
                       "table2_cifar10", "table2_cifar100", "table2_digits", "table2_mnist", "table2_svhn"]
    assert sorted(p.stem for p in Path(CONF, "experiment").glob("tune_*.yaml")) == TUNE_PRESETS


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_is_a_sweep_with_its_own_dir(preset):
    cfg = compose_with_hydra([f"experiment={preset}"])
    assert cfg.hydra.sweep.dir == f"outputs/sweeps/{preset}"
    assert sweep_values(cfg.hydra.sweeper.params)["seed"] == SEEDS


@pytest.mark.parametrize("preset, swept, runs, epochs", [
    ("table2_digits", "case", 5, 20), ("methods_digits", "arm", 25, 10)])
def test_the_digits_presets(preset, swept, runs, epochs):
    cfg = compose_with_hydra([f"experiment={preset}"])
    values = sweep_values(cfg.hydra.sweeper.params)
    assert len(values[swept]) == runs and len(values["seed"]) == 5
    assert (cfg.dataset.name, cfg.model.depth, cfg.trainer.max_epochs, cfg.dataset.val_size) == ("digits", 10, epochs, 0)
    assert cfg.trainer.enable_progress_bar is False


def test_debug_fast_runs_one_batch_each_and_is_never_finished(run_train, tmp_path):
    cfg = compose_cfg(["debug=fast"])
    assert cfg.trainer.fast_dev_run == 1 and cfg.debug_run is True
    scored = HandScore(rows=512)   # one test batch of 512
    record = run_train("debug=fast", callbacks=[scored])
    assert record["status"] == "debug"
    assert record["test_error"] == pytest.approx(scored.scores["test_error"], abs=1e-4)
    run_dir = tmp_path / "run"
    assert finished_record(run_dir) is None  # a sweep runs it again rather than skipping it
    assert sweep_summary(tmp_path).split(": ")[1].startswith("0 finished, 0 failed, 0 skipped, 0 interrupted, 1 debug")


def test_debug_overfit_drives_the_training_loss_down(run_train, tmp_path):
    cfg = compose_cfg(["debug=overfit"])
    assert (cfg.trainer.overfit_batches, cfg.trainer.max_epochs, cfg.dataset.pad, cfg.dataset.flip) == (2, 50, 0, False)
    record = run_train("debug=overfit", "trainer.max_epochs=30")
    rows = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert len(rows) == 30 and record["status"] == "debug"
    # Two batches seen 30 times: the loss ends far below a uniform guess's ln(10) = 2.30 and its first epoch.
    assert float(rows[-1]["train/loss"]) < min(0.1 * float(rows[0]["train/loss"]), 0.2)


@pytest.mark.parametrize("dataset, preset", [("aircraft", "methods_aircraft"),
                                             ("tiered_imagenet", "methods_tiered_imagenet"),
                                             ("inat19", "methods_inat19"), ("inat21_mini", "methods_inat21_mini")])
def test_a_field_data_set_chosen_on_its_own_gets_its_presets_optimiser(dataset, preset):
    """``dataset=aircraft case=family model=resnet18`` trains with aircraft's recipe, not the paper's LR 1.0 plain
    SGD meant for CIFAR ResNets (conf/recipe/, Hydra's specializing config); the command line still wins."""
    alone = compose_cfg([f"dataset={dataset}", "model=resnet18"])
    field = compose_cfg([f"experiment={preset}"])
    assert alone.optimizer == field.optimizer and alone.lr_min == field.lr_min
    assert compose_cfg([f"dataset={dataset}", "optimizer.lr=0.5"]).optimizer.lr == 0.5
    paper = compose_cfg(["dataset=cifar10"])
    assert (paper.optimizer.lr, paper.optimizer.momentum) == (1.0, 0.0)  # the paper's data sets keep the paper's
