"""Sweeps: presets, sweep dir names, launchers, skip / resume / fault tolerance, end to end with the report."""
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
from hydra import compose, initialize_config_dir

from conftest import CONF, compose_cfg

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = ",trainer.max_epochs=2"  # in every job dir name of the end-to-end sweep
CASES = ["baseline", "case1", "case2", "case3", "case4"]


def compose_with_hydra(overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("preset, dataset, depth", [
    ("table2_mnist", "mnist", 10), ("table2_svhn", "svhn", 28), ("table2_cifar10", "cifar10", 28),
    ("smoke", "digits", 10)])
def test_presets_sweep_five_seeds_times_five_cases_with_the_paper_recipe(preset, dataset, depth):
    cfg = compose_with_hydra([f"experiment={preset}"])
    assert cfg.hydra.sweep.dir == f"outputs/sweeps/{preset}"
    params = cfg.hydra.sweeper.params
    assert params.case.split(",") == CASES and params.seed == "range(0,5)"
    assert (cfg.dataset.name, cfg.model.depth, cfg.dataset.batch_size) == (dataset, depth, 128)
    assert cfg.trainer.max_epochs == (3 if preset == "smoke" else 250)
    assert cfg.test_curve is True and cfg.dataset.val_size == 0
    # The paper's optimiser schedule is the default one: cosine from LR 1.0.
    assert (cfg.optimizer.lr, cfg.lr_min) == (1.0, 0.0)


def test_sweep_job_dirs_are_named_by_their_overrides_without_timestamps():
    cfg = compose_with_hydra(["experiment=table2_svhn", "seed=3", "case=case2", "trainer.accelerator=gpu"])
    assert cfg.hydra.job.override_dirname == "case=case2,seed=3"  # sorted; experiment/accelerator left out
    plain = compose_with_hydra(["case=case1", "seed=0", "optimizer.lr=0.1"])
    assert plain.hydra.sweep.dir == "outputs/sweeps/multirun"
    assert plain.hydra.job.override_dirname == "case=case1,optimizer.lr=0.1,seed=0"


def test_local_sweeps_run_one_job_after_another_by_default():
    cfg = compose_with_hydra([])
    assert cfg.hydra.launcher._target_ == "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def test_slurm_launcher_composes_with_partition_gpus_and_time():
    cfg = compose_with_hydra(["experiment=table2_cifar10", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                              "hydra.launcher.gpus_per_node=2", "hydra.launcher.timeout_min=90"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 2, 90)
    assert launcher.submitit_folder == "outputs/sweeps/table2_cifar10/.submitit/%j"
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    SlurmLauncher(**{k: v for k, v in launcher.items() if k != "_target_"})  # every key is a real option


class CrashInEpoch(pl.Callback):
    """Stands in for a kill: the run stops in the middle of an epoch, metrics.json still says running."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 2:
            raise RuntimeError("simulated crash")


class CrashInTest(pl.Callback):
    """The run stops after its last epoch, before the test ends."""

    def on_test_start(self, trainer, pl_module):
        raise RuntimeError("simulated crash")


def test_interrupted_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_one(tmp_path):
    from src.train import train

    overrides = ["trainer.max_epochs=2", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
                 "case=case1", "test_curve=true"]
    whole = train(compose_cfg(overrides), _mkdir(tmp_path / "whole"))
    run_dir = _mkdir(tmp_path / "interrupted")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(compose_cfg(overrides), run_dir, callbacks=[CrashInEpoch(1)])
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "running"
    assert (run_dir / "checkpoints" / "last.ckpt").exists()

    resumed = train(compose_cfg(overrides), run_dir)
    assert resumed["status"] == "finished" and resumed["resumed_at_epoch"] == 1 and whole["resumed_at_epoch"] is None
    # Weights, optimiser, schedule and random state all come back: the same numbers as without the crash.
    for key in ("test_error", "test_loss", "val_error"):
        assert resumed[key] == whole[key]
    history = (run_dir / "history.csv").read_text()
    assert history == (tmp_path / "whole" / "history.csv").read_text()
    assert [line.split(",")[0] for line in history.splitlines()[1:]] == ["0", "1"]
    assert "curve/test_loss" in history.splitlines()[0]
    a, b = np.load(run_dir / "aux_scores.npz"), np.load(tmp_path / "whole" / "aux_scores.npz")
    assert np.array_equal(a["score"], b["score"]) and len(a["score"]) == len(a["label"]) == len(a["superclass"])

    # Stopped after the last epoch: the resume trains nothing more and gives the same results.
    run_dir = _mkdir(tmp_path / "in_test")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(compose_cfg(overrides), run_dir, callbacks=[CrashInTest()])
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "running"
    resumed = train(compose_cfg(overrides), run_dir)
    assert resumed["resumed_at_epoch"] == 2
    for key in ("test_error", "test_loss", "val_error"):
        assert resumed[key] == whole[key]


def test_finished_run_dir_is_skipped(run_train, tmp_path):
    first = run_train("trainer.max_epochs=1", "case=baseline")
    stamp = (tmp_path / "run" / "metrics.json").stat().st_mtime_ns
    assert run_train("trainer.max_epochs=1", "case=baseline") == first
    assert (tmp_path / "run" / "metrics.json").stat().st_mtime_ns == stamp


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _sweep(sweep_dir: Path, log: Path, popen: bool = False):
    # 2 seeds × {baseline, case1} on digits, plus case=custom without a mapping: two jobs that fail.
    cmd = [sys.executable, "-m", "src.train", "-m", "experiment=smoke", "seed=0,1", "case=baseline,case1,custom",
           "trainer.max_epochs=2", "trainer.accelerator=cpu", f"hydra.sweep.dir={sweep_dir}"]
    with open(log, "w") as out:
        if popen:
            return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)
        return subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)


def _records(sweep_dir: Path) -> dict[str, dict]:
    """{job dir name without the common suffix: metrics.json}."""
    return {p.parent.name.removesuffix(EPOCHS): json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")}


def test_sweep_is_killed_resumed_skipped_and_reported(tmp_path, capsys):
    from src.report import main as report_main

    sweep = tmp_path / "sweep"
    # 1. Kill the sweep (SIGKILL) as soon as its first job has saved the checkpoint of epoch 0 of 2.
    proc = _sweep(sweep, tmp_path / "log1.txt", popen=True)
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline and not list(sweep.glob("*/checkpoints/last.ckpt")):
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    killed = {name: r for name, r in _records(sweep).items()}
    assert list(killed) == ["case=baseline,seed=0"], (tmp_path / "log1.txt").read_text()[-3000:]
    assert killed["case=baseline,seed=0"]["status"] == "running"
    # Nothing a killed run leaves counts as finished.
    assert report_main([str(sweep)]) == 0
    rows = {r.split("|")[3].strip(): r for r in (sweep / "table.md").read_text().splitlines()[2:] if r.startswith("|")}
    assert "(n=0)" in rows["baseline"] and "1 unfinished" in rows["baseline"]

    # 2. The same command again: the killed job resumes at epoch 1, the others run, custom fails alone.
    proc = _sweep(sweep, tmp_path / "log2.txt")
    log2 = (tmp_path / "log2.txt").read_text()
    assert proc.returncode == 0, log2[-3000:]
    assert f"error: case=custom,seed=0{EPOCHS}: case=custom needs" in log2
    records = _records(sweep)
    finished = {k: r for k, r in records.items() if r["status"] == "finished"}
    assert sorted(finished) == ["case=baseline,seed=0", "case=baseline,seed=1", "case=case1,seed=0",
                                "case=case1,seed=1"]
    assert {k: r["resumed_at_epoch"] for k, r in finished.items()} == {
        "case=baseline,seed=0": 1, "case=baseline,seed=1": None, "case=case1,seed=0": None,
        "case=case1,seed=1": None}
    history = (sweep / f"case=baseline,seed=0{EPOCHS}" / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["0", "1"]  # each epoch once: not restarted
    assert [records[f"case=custom,seed={s}"]["status"] for s in (0, 1)] == ["failed", "failed"]

    # 3. The report: baseline and case1 with n=2, mean and sample std of the runs' test errors.
    capsys.readouterr()
    assert report_main([str(sweep)]) == 0
    printed = capsys.readouterr().out
    from src.report import group_runs, load_runs, table_rows

    rows = {r["case"]: r for r in table_rows(group_runs(load_runs([sweep])))}
    assert sorted(rows) == ["baseline", "case1", "custom"]
    for case in ("baseline", "case1"):
        errors = [finished[f"case={case},seed={s}"]["test_error"] for s in (0, 1)]
        assert rows[case]["n"] == 2 and rows[case]["seeds"] == "0 1"
        assert rows[case]["test_error_mean"] == pytest.approx(np.mean(errors))
        assert rows[case]["test_error_std"] == pytest.approx(np.std(errors, ddof=1))
        assert f"{np.mean(errors):.2f} ± {np.std(errors, ddof=1):.2f} (n=2)" in printed
    assert rows["case1"]["delta_vs_baseline"] == pytest.approx(
        rows["case1"]["test_error_mean"] - rows["baseline"]["test_error_mean"])
    assert rows["custom"]["n"] == 0 and rows["custom"]["failed"] == 2 and "2 failed" in rows["custom"]["flags"]
    assert "case=custom,seed=1" in printed and "(failed)" in printed
    csv_lines = (sweep / "table.csv").read_text().splitlines()
    assert csv_lines[0].startswith("dataset,depth,settings,case,n,") and len(csv_lines) == 4
    for name in ("loss_digits_depth10.png", "aux_scores_digits_depth10.png"):
        data = (sweep / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
        import matplotlib.image

        assert matplotlib.image.imread(sweep / name).shape[2] in (3, 4)
    assert list((sweep / "tb").glob("events.out.tfevents.*"))

    # 4. Once more: the four finished jobs are skipped, their results untouched.
    before = {k: (sweep / (k + EPOCHS) / "metrics.json").read_bytes() for k in finished}
    proc = _sweep(sweep, tmp_path / "log3.txt")
    log3 = (tmp_path / "log3.txt").read_text()
    assert proc.returncode == 0 and log3.count("already finished") == 4, log3[-3000:]
    assert {k: (sweep / (k + EPOCHS) / "metrics.json").read_bytes() for k in finished} == before
