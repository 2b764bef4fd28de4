"""SIGTERM/SIGINT: a clean stop with an `interrupted` record, one stderr line, a non-zero exit code."""
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from src.run.console import python_command
from src.run.signals import RunInterrupted, stop_on_signal

ROOT = Path(__file__).resolve().parents[2]
CFG = OmegaConf.create({"dataset": {"name": "digits"}, "seed": 0})


class Tiny(pl.LightningModule):
    """A linear model on random data; ``kill_at`` sends a signal to this process at one step."""

    def __init__(self, kill_at=None, signum=signal.SIGTERM):
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)
        self.kill_at, self.signum = kill_at, signum

    def _step(self, stage, batch_idx):
        if self.kill_at == (stage, self.current_epoch, batch_idx):
            os.kill(os.getpid(), self.signum)
        return self.layer(torch.ones(2, 4)).sum()

    def training_step(self, batch, batch_idx):
        return self._step("train", batch_idx)

    def test_step(self, batch, batch_idx):
        self._step("test", batch_idx)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(4, 1), batch_size=1)

    test_dataloader = train_dataloader


def run(tmp_path, module, stages=("fit", "test")):
    """What main() does around train(): returns (exit code, trainer, record) and what was done."""
    done = []
    trainer = None
    try:
        with stop_on_signal(tmp_path, CFG) as guard:
            trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                 enable_model_summary=False, callbacks=[guard.callback()])
            for stage in stages:
                getattr(trainer, stage)(module)
                done.append(stage)
    except SystemExit as e:
        return e.code, trainer, json.loads((tmp_path / "metrics.json").read_text()), done
    return 0, trainer, {}, done


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_fit_stops_after_the_step_and_records_interrupted(tmp_path, capsys, signum):
    code, trainer, record, done = run(tmp_path, Tiny(("train", 1, 2), signum))
    assert code == 128 + signum and done == []
    assert record["status"] == "interrupted" and record["signal"] == signal.Signals(signum).name
    assert trainer.current_epoch == 1 and trainer.global_step == 4 + 3  # the step itself completed
    name = signal.Signals(signum).name
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"stopped: {tmp_path}: {name}; re-run the same command to resume"


@pytest.mark.parametrize("batch", [1, 3])  # Lightning itself stops after batch 1 but drops a signal in the last
def test_a_signal_during_the_test_pass_is_not_lost(tmp_path, batch):
    code, _, record, done = run(tmp_path, Tiny(("test", 3, batch)))
    assert code == 128 + signal.SIGTERM and done == ["fit"] and record["status"] == "interrupted"


def test_a_signal_outside_lightning_stops_at_once(tmp_path):
    with pytest.raises(SystemExit) as info:
        with stop_on_signal(tmp_path, CFG):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
            pytest.fail("not stopped")
    assert info.value.code == 143
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "interrupted"


def test_no_signal_changes_nothing_and_handlers_come_back(tmp_path):
    before = signal.getsignal(signal.SIGINT)
    code, _, record, done = run(tmp_path, Tiny())
    assert code == 0 and done == ["fit", "test"] and not (tmp_path / "metrics.json").exists()
    assert signal.getsignal(signal.SIGINT) == before
    with pytest.raises(ValueError):  # other errors pass through untouched
        with stop_on_signal(tmp_path, CFG):
            raise ValueError("x")


def test_run_interrupted_is_not_an_exception():
    assert not isinstance(RunInterrupted(signal.SIGTERM), Exception)
    assert str(RunInterrupted(signal.SIGTERM)) == "SIGTERM"


def test_sigterm_stops_the_real_run_and_a_rerun_resumes(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "src.train", "trainer.max_epochs=6", "trainer.enable_progress_bar=false", "threads=1",
           f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before its first checkpoint"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    # A single run's dir has a timestamp: the line gives the command that resumes in this dir.
    resume = f"{python_command()} -m src.train {' '.join(cmd[3:-1])} hydra.run.dir={run_dir}"
    assert err.strip().splitlines()[-1] == f"stopped: {run_dir}: SIGTERM; resume with: {resume}"
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "interrupted" and record["signal"] == "SIGTERM"

    rerun = subprocess.run(shlex.split(resume), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "finished" and record["resumed_at_epoch"] >= 1
    with open(run_dir / "history.csv") as f:  # each epoch once
        assert [int(line.split(",")[0]) for line in f.read().splitlines()[1:]] == list(range(1, 7))  # counted from 1


class _SignalAtTestBatch(pl.Callback):
    def __init__(self, batch):
        self.batch = batch

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)


class _TrainSteps(pl.Callback):
    def __init__(self):
        self.steps = 0

    def on_train_batch_end(self, *args):
        self.steps += 1


@pytest.mark.parametrize("batch", [0, 1])  # the first and the last of the two test batches (360 images, 256 each)
def test_a_signal_during_the_test_pass_of_a_real_run_is_recorded_and_a_rerun_only_tests(tmp_path, capsys, batch):
    """docs/reliability.md: a signal during the final test pass (its last batch too) gives the same
    `stopped:` line and `interrupted` with no test metrics; the rerun does not train again, it only tests."""
    from helpers import FAST, compose_cfg
    from src.train import train

    cfg = compose_cfg([*FAST, "trainer.enable_checkpointing=true", "dataset.eval_batch_size=256"])
    with pytest.raises(SystemExit) as info:
        with stop_on_signal(tmp_path, cfg) as guard:
            train(cfg, tmp_path, callbacks=[guard.callback(), _SignalAtTestBatch(batch)])
    assert info.value.code == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"stopped: {tmp_path}: SIGTERM; re-run the same command to resume"
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "interrupted" and record["signal"] == "SIGTERM" and "test_error" not in record

    steps = _TrainSteps()
    rerun = train(cfg, tmp_path, callbacks=[steps])
    assert steps.steps == 0 and rerun["status"] == "finished" and "test_error" in rerun
    with open(tmp_path / "history.csv") as f:
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == ["1"]  # the one epoch (counted from 1), once
