"""Sweeps: presets, sweep dir names, launchers, skip / resume / fault tolerance, end to end with the report."""
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from helpers import CONF, compose_cfg

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = ",trainer.max_epochs=2"  # in every job dir name of the end-to-end sweep
CASES = ["baseline", "case1", "case2", "case3", "case4"]


def compose_with_hydra(overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


TABLE2 = ["dataset.val_size=0", "trainer.max_epochs=250", "test_curve=true"]


def sweep_values(params) -> dict[str, list[str]]:
    """The values a sweeper's params expand to: {"seed": ["0", ..., "4"], "case": [...]}."""
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return {o.key_or_group: list(o.sweep_string_iterator()) for o in parsed}


@pytest.mark.parametrize("preset, by_hand, depth, epochs", [
    ("table2_mnist", ["dataset=mnist", *TABLE2], 10, 250),
    ("table2_svhn", ["dataset=svhn", *TABLE2], 28, 250),
    ("table2_cifar10", ["dataset=cifar10", *TABLE2], 28, 250),
    ("smoke", ["dataset=digits", "dataset.val_size=0", "trainer.max_epochs=3", "test_curve=true",
               "trainer.enable_progress_bar=false"], 10, 3)])
def test_presets_sweep_five_seeds_times_five_cases_with_the_paper_recipe(preset, by_hand, depth, epochs):
    cfg = compose_with_hydra([f"experiment={preset}"])
    assert cfg.hydra.sweep.dir == f"outputs/sweeps/{preset}"
    assert sweep_values(cfg.hydra.sweeper.params) == {"case": CASES, "seed": ["0", "1", "2", "3", "4"]}
    assert (cfg.dataset.name, cfg.model.depth, cfg.trainer.max_epochs) == (by_hand[0].split("=")[1], depth, epochs)
    assert cfg.dataset.val_size == 0 and cfg.test_curve is True and cfg.dataset.batch_size == 128
    # The defaults: cosine from LR 1.0 to 0 (the paper), gradient clipping at 1.0 (not the paper, README).
    assert (cfg.optimizer.lr, cfg.lr_min, cfg.trainer.gradient_clip_val) == (1.0, 0.0, 1.0)
    # The preset sets nothing else: the same config as the dataset's defaults with those keys by hand.
    assert compose_cfg([f"experiment={preset}"]) == compose_cfg(by_hand)


def test_sweep_job_dirs_are_named_by_their_overrides_without_timestamps():
    cfg = compose_with_hydra(["experiment=table2_svhn", "seed=3", "case=case2", "trainer.accelerator=gpu"])
    assert cfg.hydra.job.override_dirname == "case=case2,seed=3"  # sorted; experiment/accelerator left out
    plain = compose_with_hydra(["case=case1", "seed=0", "optimizer.lr=0.1"])
    assert plain.hydra.sweep.dir == "outputs/sweeps/case=case1_optimizer.lr=0.1_seed=0-" + \
        hashlib.sha1(b"case=case1\noptimizer.lr=0.1\nseed=0").hexdigest()[:8]
    assert plain.hydra.job.override_dirname == "case=case1,optimizer.lr=0.1,seed=0"
    # Where the data lives is no setting: a path in the dir name would also nest dirs.
    located = compose_with_hydra(["case=case1", "seed=0", "dataset.data_dir=../shared/data", "dataset.download=false"])
    assert located.hydra.job.override_dirname == "case=case1,seed=0"


def test_local_sweeps_run_side_by_side_by_default_and_basic_runs_one_after_another():
    cfg = compose_with_hydra([])
    assert cfg.hydra.launcher._target_ == "hydra_plugins.hal_local_launcher.launcher.HALLocalLauncher"
    assert cfg.hydra.launcher.n_jobs == "auto" and cfg.hydra.launcher.jobs_per_gpu == 1
    basic = compose_with_hydra(["hydra/launcher=basic"])
    assert basic.hydra.launcher._target_ == "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def test_slurm_launcher_composes_with_partition_gpus_and_time():
    cfg = compose_with_hydra(["experiment=table2_cifar10", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                              "hydra.launcher.gpus_per_node=2", "hydra.launcher.timeout_min=90"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hal_slurm_launcher.launcher.HALSlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 2, 90)
    assert launcher.submitit_folder == "outputs/sweeps/table2_cifar10/.submitit/%j"
    from hydra_plugins.hal_slurm_launcher.launcher import HALSlurmLauncher

    HALSlurmLauncher(**{k: v for k, v in launcher.items() if k != "_target_"})  # every key is a real option


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
    assert [line.split(",")[0] for line in history.splitlines()[1:]] == ["1", "2"]  # counted from 1
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


KILLED = "case=case1,seed=0"  # the third job: the two baseline jobs before it finish
# `python -m src.train ARGS`, except that job KILLED never returns from its first checkpoint save: it touches
# $HAL_TEST_SAVED and hangs right after writing last.ckpt of epoch 0 of 2, so the kill lands there however fast
# the machine is (an epoch of digits takes well under a second).
HANG_AFTER_FIRST_CHECKPOINT = f"""
import os, pathlib, runpy, time
import pytorch_lightning as pl

save = pl.Trainer.save_checkpoint

def save_and_hang(self, *args, **kwargs):
    save(self, *args, **kwargs)
    if pathlib.Path(self.default_root_dir).name == "{KILLED}{EPOCHS}":
        open(os.environ["HAL_TEST_SAVED"], "w").close()
        time.sleep(600)

pl.Trainer.save_checkpoint = save_and_hang
runpy.run_module("src.train", run_name="__main__")
"""


def _sweep(sweep_dir: Path, log: Path, saved: Path = None):
    """The sweep, to its end; with ``saved``, started in the background and hung in job KILLED."""
    # 2 seeds × {baseline, case1} on digits, plus case=custom without a mapping: two jobs that fail.
    # hydra/launcher=basic: the jobs run in this process, where the hang is patched in.
    args = ["-m", "experiment=smoke", "seed=0,1", "case=baseline,case1,custom", "trainer.max_epochs=2",
            "trainer.accelerator=cpu", "threads=1", f"hydra.sweep.dir={sweep_dir}", "hydra/launcher=basic"]
    with open(log, "w") as out:
        if saved:
            return subprocess.Popen([sys.executable, "-c", HANG_AFTER_FIRST_CHECKPOINT, *args], cwd=ROOT,
                                    env={**os.environ, "HAL_TEST_SAVED": str(saved)}, stdout=out,
                                    stderr=subprocess.STDOUT, text=True)
        return subprocess.run([sys.executable, "-m", "src.train", *args], cwd=ROOT, stdout=out,
                              stderr=subprocess.STDOUT, text=True)


def _records(sweep_dir: Path) -> dict[str, dict]:
    """{job dir name without the common suffix: metrics.json}."""
    return {p.parent.name.removesuffix(EPOCHS): json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")}


def test_sweep_is_killed_resumed_skipped_and_reported(tmp_path, capsys):
    from src.report.tables import group_runs, load_runs, table_rows
    from src.report.tables import main as report_main

    sweep = tmp_path / "sweep"
    # 1. Kill the sweep (SIGKILL) once its third job has saved the checkpoint of epoch 0 of 2.
    saved = tmp_path / "saved"
    proc = _sweep(sweep, tmp_path / "log1.txt", saved=saved)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline and not saved.exists():
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    log1 = (tmp_path / "log1.txt").read_text()
    assert saved.exists(), log1[-3000:]
    assert {k: r["status"] for k, r in _records(sweep).items()} == {
        "case=baseline,seed=0": "finished", "case=baseline,seed=1": "finished", KILLED: "running"}, log1[-3000:]
    # Nothing a killed run leaves counts as finished.
    rows = {r["case"]: r for r in table_rows(group_runs(load_runs([sweep])))}
    assert rows["case1"]["n"] == 0 and rows["case1"]["flags"] == "n<5; 1 unfinished"
    done = {k: (sweep / (k + EPOCHS) / "metrics.json").read_bytes() for k in ("case=baseline,seed=0",
                                                                                "case=baseline,seed=1")}

    # 2. The same command again: the finished jobs are skipped, their results untouched; the killed job
    # resumes at epoch 1, the others run, custom fails alone.
    proc = _sweep(sweep, tmp_path / "log2.txt")
    log2 = (tmp_path / "log2.txt").read_text()
    assert proc.returncode == 0 and log2.count("already finished") == 2, log2[-3000:]
    assert {k: (sweep / (k + EPOCHS) / "metrics.json").read_bytes() for k in done} == done
    assert f"error: case=custom,seed=0{EPOCHS}: case=custom needs" in log2
    records = _records(sweep)
    finished = {k: r for k, r in records.items() if r["status"] == "finished"}
    assert sorted(finished) == ["case=baseline,seed=0", "case=baseline,seed=1", "case=case1,seed=0",
                                "case=case1,seed=1"]
    assert {k: r["resumed_at_epoch"] for k, r in finished.items()} == {
        "case=baseline,seed=0": None, "case=baseline,seed=1": None, KILLED: 1, "case=case1,seed=1": None}
    history = (sweep / f"{KILLED}{EPOCHS}" / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2"]  # each epoch once: not restarted
    assert [records[f"case=custom,seed={s}"]["status"] for s in (0, 1)] == ["failed", "failed"]

    # 3. The report: baseline and case1 with n=2, mean and sample std of the runs' test errors.
    capsys.readouterr()
    assert report_main([str(sweep)]) == 0
    printed = capsys.readouterr().out
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



def test_each_ad_hoc_sweep_command_has_its_own_folder_named_by_its_overrides():
    """Issue 36 §2: a folder per distinct command (not per time), the same one for the same command. (compose()
    takes no sweep values; the slow test below runs real sweeps.)"""
    folder = lambda *o: compose_with_hydra(list(o)).hydra.sweep.dir  # noqa: E731
    first = folder("case=case1", "seed=0", "trainer.max_epochs=3")
    assert first.startswith("outputs/sweeps/case=case1_seed=0_trainer.max_epochs=3-")
    assert folder("seed=0", "trainer.max_epochs=3", "case=case1") == first  # order of the words
    assert folder("case=case1", "seed=0", "trainer.max_epochs=3", "threads=2",
                  "dataset.data_dir=../shared/data") == first  # how and where to run: the same folder, it resumes
    assert folder("case=case1", "seed=0", "trainer.max_epochs=3", "optimizer.lr=0.1") != first
    assert folder() == "outputs/sweeps/multirun"
    assert compose_with_hydra(["experiment=smoke"]).hydra.sweep.dir == "outputs/sweeps/smoke"  # presets name theirs


@pytest.mark.slow
def test_two_ad_hoc_sweeps_land_in_two_folders_and_the_same_command_resumes_its_own(tmp_path):
    """The folder of a real ``-m`` run: every job of a command in one folder (the jobs' configs reuse the sweep's
    name rather than deriving one from their own overrides), another command in another."""
    def sweep(*overrides):
        command = [sys.executable, "-m", "src.train", "-m", "case=baseline,case1", "trainer.max_epochs=1",
                   "+trainer.limit_train_batches=2", "+trainer.limit_test_batches=2", *overrides]
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        return done.stdout
    sweep()
    sweep("optimizer.lr=0.1")
    folders = sorted(p.name for p in (tmp_path / "outputs" / "sweeps").iterdir())
    assert len(folders) == 2 and all(len(list((tmp_path / "outputs" / "sweeps" / f).glob("*/metrics.json"))) == 2
                                     for f in folders)
    assert "2 skipped" in sweep("threads=1")  # the first command again: its own folder, nothing run twice
    assert len(list((tmp_path / "outputs" / "sweeps").iterdir())) == 2
