import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate

from helpers import CONF, HandScore, compose_cfg
from src.report.paper import PAPER_DEPTH

DATASETS = sorted(p.stem for p in Path(CONF, "dataset").glob("*.yaml") if p.stem != "base")
CASES = ["baseline", "case1", "case2", "case3", "case4"]
METHODS = sorted(p.stem for p in Path(CONF, "method").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in Path(CONF, "experiment").glob("*.yaml"))
ROOT = Path(__file__).resolve().parents[1]


# The paper's cases name classes of its datasets; a folder of your own images takes case=custom.
@pytest.mark.parametrize("dataset, case", [(d, c) for d in DATASETS
                                           for c in (["baseline", "custom"] if d == "folder" else CASES)])
def test_every_dataset_case_composes_and_instantiates(dataset, case):
    from src.run.config import check_config

    cfg = compose_cfg([f"dataset={dataset}", f"case={case}"])
    check_config(cfg)
    assert cfg.case.name == case and cfg.dataset.name == dataset
    assert cfg.model.depth == cfg.depth == cfg.dataset.depth
    net = instantiate(cfg.model, num_classes=10, in_channels=3, num_superclasses=None if case == "baseline" else 2)
    assert net.depth == cfg.model.depth and (net.auxiliary is None) == (case == "baseline")


def test_the_dataset_depths_are_the_papers_and_depth_overrides_them():
    """The default depth is data of each dataset (conf/dataset/*.yaml); Table 2's datasets take its depths."""
    for dataset, depth in PAPER_DEPTH.items():
        assert compose_cfg([f"dataset={dataset}"]).depth == depth, dataset
    assert compose_cfg(["dataset=digits"]).depth == 10 and compose_cfg(["dataset=folder"]).depth == 28
    cfg = compose_cfg(["dataset=mnist", "depth=28"])
    assert cfg.depth == cfg.model.depth == 28 and cfg.dataset.depth == 10


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_every_method_composes_on_every_dataset_and_instantiates(dataset, method):
    from src.run.config import check_config

    cfg = compose_cfg([f"dataset={dataset}", f"method={method}"] + (["case=custom"] if dataset == "folder" else []))
    check_config(cfg)
    built = instantiate(cfg.method)
    assert built.name == cfg.method.name == method and built.position == 3


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_passes_the_checks(experiment):
    from src.run.config import check_config

    check_config(compose_cfg([f"experiment={experiment}"]))


def test_fast_dev_run(run_train):
    # fast_dev_run tests one batch: the error of the first eval batch, scored by hand.
    scored = HandScore(rows=compose_cfg().dataset.eval_batch_size)
    record = run_train("trainer.fast_dev_run=true", callbacks=[scored])
    assert record["status"] == "finished"
    assert record["test_error"] == pytest.approx(scored.scores["test_error"], abs=1e-4)


@pytest.mark.parametrize("case", ["baseline", "case4"])
def test_metrics_json_is_written_with_values_in_range(run_train, tmp_path, case):
    scored = HandScore()
    record = run_train(f"case={case}", "trainer.max_epochs=2", callbacks=[scored])
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk == record
    assert on_disk["status"] == "finished"
    assert (on_disk["dataset"], on_disk["case"], on_disk["depth"], on_disk["seed"], on_disk["epochs"]) == \
        ("digits", case, 10, 0, 2)
    if case == "baseline":
        assert on_disk["superclasses"] is None
    else:
        assert on_disk["superclasses"] == [0, 2, 1, 1, 2, 1, 0, 2, 0, 0]
    assert on_disk["test_error"] == pytest.approx(scored.scores["test_error"], abs=1e-4)
    assert on_disk["val_error"] == pytest.approx(scored.val["test_error"], abs=1e-4)  # final weights on val
    assert on_disk["test_acc"] == pytest.approx(100 - on_disk["test_error"])
    assert on_disk["test_loss"] > 0 and on_disk["duration_s"] > 0
    assert len(on_disk["git_commit"]) in (7, 40) or on_disk["git_commit"] == "unknown"
    assert not (tmp_path / "run" / "metrics.json.tmp").exists()
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))


def test_same_seed_gives_equal_metrics(run_train, tmp_path):
    a = run_train("trainer.max_epochs=2", run_dir=tmp_path / "a")
    b = run_train("trainer.max_epochs=2", run_dir=tmp_path / "b")
    c = run_train("trainer.max_epochs=2", "seed=1", run_dir=tmp_path / "c")
    drop = lambda r: {k: v for k, v in r.items() if k not in ("duration_s", "seed", "train_images_per_s")}
    assert drop(a) == drop(b)
    assert drop(a) != drop(c)


def test_diverging_loss_is_a_one_line_divergence_error(run_train):
    from src.run.errors import DivergenceError

    with pytest.raises(DivergenceError, match="^training loss became non-finite in epoch 0; lower optimizer.lr"):
        run_train("optimizer.lr=1e6", "trainer.gradient_clip_val=null", "trainer.max_epochs=3")
    # Finite but far above a uniform guess's ln(C): diverged too (divergence_factor × ln C).
    with pytest.raises(DivergenceError, match=r"training loss is .* > 0.1 × ln\(10\)"):
        run_train("divergence_factor=0.1")


@pytest.mark.slow
def test_diverging_loss_stops_with_a_clear_error(tmp_path):
    run_dir = tmp_path / "div"
    proc = subprocess.run(
        [sys.executable, "-m", "src.train", "optimizer.lr=1e6", "trainer.gradient_clip_val=null",
         "trainer.max_epochs=3", "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"],
        cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: training loss became non-finite")
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and "test_error" not in record


@pytest.mark.slow
def test_unknown_option_fails_without_writing_a_result(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "src.train", "case=case9", f"hydra.run.dir={tmp_path / 'x'}"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and "case9" in proc.stderr
    assert not (tmp_path / "x" / "metrics.json").exists()


def test_depth_composes_without_quoting():
    """A plain top-level key: no quoting, no sys.argv rewriting, through hydra.compose as on the command line."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["depth=28", "dataset=cifar10"])
    assert (cfg.depth, cfg.model.depth, cfg.dataset.name) == (28, 28, "cifar10")
    assert compose_cfg(["dataset=mnist"]).model.depth == 10 and compose_cfg(["dataset=svhn"]).model.depth == 28


@pytest.mark.slow
def test_depth_sweeps_from_the_command_line_and_from_sweeper_params(tmp_path):
    common = ["trainer.fast_dev_run=true", "trainer.enable_progress_bar=false"]
    # A preset of the user's own, as conf/experiment/*.yaml would hold it.
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "depths.yaml").write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    params:\n      depth: 10,16\n")
    preset = ["--config-dir", str(tmp_path / "conf"), "experiment=depths"]
    for name, sweep in (("cli", ["depth=10,16"]), ("params", preset)):
        proc = subprocess.run([sys.executable, "-m", "src.train", "-m", *sweep, *common,
                               f"hydra.sweep.dir={tmp_path / name}"], cwd=ROOT,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        depths = sorted(json.loads(p.read_text())["depth"] for p in (tmp_path / name).rglob("metrics.json"))
        assert depths == [10, 16], name


@pytest.mark.slow
def test_depth_override_on_the_command_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "src.train", "depth=16", "trainer.fast_dev_run=true",
                           "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "metrics.json").read_text())["depth"] == 16


@pytest.mark.parametrize("override, message", [
    pytest.param("model.depth=12", "error: model.depth must be 6n+4", marks=pytest.mark.slow),
    pytest.param("dataset.val_size=1.5", "error: dataset.val_size as a fraction must be in [0, 1)",
                 marks=pytest.mark.slow),
])
def test_constructor_errors_are_one_line(tmp_path, override, message):
    """hydra.utils.instantiate wraps constructor errors; the user still gets one line, not a traceback."""
    proc = subprocess.run([sys.executable, "-m", "src.train", override, f"hydra.run.dir={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"


def test_tensorboard_has_the_learning_rate_per_epoch_and_the_hparams_with_final_metrics(run_train, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    record = run_train("trainer.max_epochs=2")
    events = EventAccumulator(str(tmp_path / "run" / "tb")).Reload()
    lr = [e.value for e in events.Scalars("lr-SGD")]
    assert len(lr) == 2 and lr[0] == pytest.approx(1.0) and lr[1] < lr[0]  # hand-derived: cosine from optimizer.lr
    # The HPARAMS tab: the final test metrics as scalars, beside the session's hyperparameters.
    final = events.Scalars("hparams/test_error_inferred")
    assert [e.value for e in final] == pytest.approx([record["test_error_inferred"]])
    # The session's hyperparameters: the composed config, flattened with "/" (seed and case among them).
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(
        events.summary_metadata["_hparams_/session_start_info"].plugin_data.content).session_start_info
    assert start.hparams["seed"].number_value == 0 and start.hparams["case/name"].string_value == "case1"
    assert start.hparams["optimizer/lr"].number_value == pytest.approx(1.0)  # hand-derived: conf's optimizer.lr
