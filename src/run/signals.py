"""SIGTERM and SIGINT stop a run at a safe point; the ``stopped:`` line says how to resume it.

What pytorch_lightning 2.6 does by itself (``trainer/connectors/signal_connector.py``, the loops):

- SIGTERM: while ``fit``/``validate``/``test`` runs, Lightning's handler only sets
  ``trainer.received_sigterm`` (and chains to the handler installed before it). The loops then raise
  ``SIGTERMException`` after the current training batch, after the epoch (its checkpoint saved), or
  after an evaluation batch *unless it was the last one*: a SIGTERM during the last test batch is
  dropped. ``SIGTERMException`` is a ``SystemExit`` without a code, so the process exits with 0.
  Outside those calls Python's default applies: the process dies at once, writing nothing.
- SIGINT: Lightning does not handle the signal; ``_call_and_handle_interrupt`` catches the
  ``KeyboardInterrupt`` wherever it lands (mid-step), ignores further SIGINTs for good
  (``signal.signal(SIGINT, SIG_IGN)``) and calls ``sys.exit(1)``.

``stop_on_signal`` makes both the same, and never silent: inside a Lightning call the signal goes
through Lightning's SIGTERM path (so DDP ranks agree on where to stop); outside one it raises
``RunInterrupted`` at once; ``StopAtPassEnd`` catches the one Lightning drops (the last evaluation
batch). The run's record then says ``interrupted``, stderr gets one line, and the exit code is
128 + the signal number (143 for SIGTERM, 130 for SIGINT), which also ends a Hydra multirun.
A second signal stops at once. Under SLURM, when the stop is SLURM requeueing the job, the line says so
instead of asking to re-run the command.
"""
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.trainer.states import TrainerFn

from src.run.console import to_log_file
from src.run.records import read_record, record_status

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunInterrupted(BaseException):
    """A stop signal arrived. A BaseException, like KeyboardInterrupt: ``except Exception`` lets it by."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class SignalGuard:
    """Records the first stop signal; decides where it turns into an exception (module docstring)."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._forwarding = False

    def handle(self, signum: int, frame) -> None:
        if self._forwarding:  # SIGINT sent through Lightning's handler, which chains back here
            return
        if self.signum is not None:
            raise RunInterrupted(self.signum)  # a second signal: stop now
        self.signum = signum
        current = signal.getsignal(signal.SIGTERM)
        if current == self.handle:  # no Lightning call is running: nothing to finish first
            raise RunInterrupted(signum)
        if signum != signal.SIGTERM and callable(current):
            self._forwarding = True
            try:
                current(signal.SIGTERM, frame)  # Lightning stops at its next safe point
            finally:
                self._forwarding = False
        # SIGTERM: Lightning's handler has run already and called this one after it.

    def raise_if_stopped(self) -> None:
        """A safe point: raise ``RunInterrupted`` if a stop signal has arrived."""
        if self.signum is not None:
            raise RunInterrupted(self.signum)

    def callback(self) -> pl.Callback:
        return StopAtPassEnd(self)


class StopAtPassEnd(pl.Callback):
    """Stops ``trainer.test``/``validate`` at the end of a pass during whose last batch a signal came
    (Lightning ignores it there). During ``fit`` Lightning's own checks stop the run."""

    def __init__(self, guard: SignalGuard) -> None:
        self.guard = guard

    def _check(self, trainer: pl.Trainer) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            self.guard.raise_if_stopped()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer)


RERUN = "re-run the same command to resume"


def slurm_requeues() -> bool:
    """Whether SLURM is requeueing this job (``scontrol requeue``, preemption, submitit's requeue on SIGUSR2):
    its restart count in ``scontrol`` is then already above the ``SLURM_RESTART_COUNT`` it started with."""
    job = os.environ.get("SLURM_JOB_ID")
    if job is None:
        return False
    try:
        shown = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True,
                               timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    restarts = re.search(r"\bRestarts=(\d+)", shown)
    return restarts is not None and int(restarts.group(1)) > int(os.environ.get("SLURM_RESTART_COUNT", 0))


def stopped_line(run_dir: Path, signum: int, resume: str = RERUN) -> str:
    """``resume``: how to go on; when SLURM requeues the job itself, that it resumes by itself instead."""
    then = "SLURM requeues the job: it resumes by itself" if slurm_requeues() else resume
    return f"stopped: {run_dir}: {signal.Signals(signum).name}; {then}"


def record_interrupted(run_dir: Path, signum: int, cfg: DictConfig) -> dict:
    """``status: interrupted`` in the run's metrics.json (a finished record stays finished)."""
    record = read_record(run_dir)
    if record.get("status") == "finished":
        return record
    return record_status(run_dir, cfg, status="interrupted", error=None, signal=signal.Signals(signum).name)


@contextlib.contextmanager
def stop_on_signal(run_dir: Path, cfg: DictConfig, resume: str = RERUN) -> Iterator[SignalGuard]:
    """Around ``train()``: SIGTERM/SIGINT end the run with the ``interrupted`` record, the stopped line
    (ending in ``resume``: how to go on) and exit code 128 + signum. Pass ``guard.callback()`` to the Trainer(s)."""
    guard = SignalGuard()
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        signal.signal(s, guard.handle)
    try:
        yield guard
        guard.raise_if_stopped()  # a signal after the last safe point is not lost either
    except BaseException:
        # SIGTERMException, RunInterrupted, Lightning's SystemExit(1), or whatever the stop broke.
        if guard.signum is None:
            raise
        record_interrupted(run_dir, guard.signum, cfg)
        line = stopped_line(run_dir, guard.signum, resume)
        print(line, file=sys.stderr, flush=True)
        to_log_file(line, logging.WARNING)
        raise SystemExit(128 + guard.signum) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
