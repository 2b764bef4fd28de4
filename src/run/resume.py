"""Resume: what lets a killed run or sweep pick up where it stopped, in one place.

- A run dir whose ``metrics.json`` says finished is skipped (``finished_record``).
- ``checkpoints/last.ckpt`` is replaced after every epoch (``checkpoint_callback``); a rerun resumes from it
  (``usable_checkpoint``), or starts over when it is damaged (moved aside to ``last.ckpt.corrupt``).
- ``RNGState`` saves the random generators in the checkpoint, so a resumed run continues exactly.
- ``EpochHistory`` (``history.csv``) travels in the checkpoint, so a resumed run keeps each epoch once.
"""
import csv
import logging
import random
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from src.run.records import move_aside, read_record, write_atomic

log = logging.getLogger(__name__)

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def finished_record(run_dir: Path) -> Optional[dict]:
    """The record of a run dir that already finished (then it is skipped), else None."""
    record = read_record(run_dir)
    if record.get("status") == "finished":
        log.info("skipping %s: already finished (delete its metrics.json to run it again)", run_dir)
        return record
    return None


class EpochHistory(pl.Callback):
    """``history.csv``: epoch, then every metric in ``trainer.callback_metrics`` at the end of that epoch.

    An epoch's row is complete only after ``LightningModule.on_train_epoch_end`` has logged ``train/*``,
    which runs after the callbacks' ``on_train_epoch_end``. So the row is taken when the epoch's
    checkpoint is saved (after the module's hook), or at the next epoch's start / the end of training
    when checkpointing is off. The rows travel in the checkpoint: a resumed run keeps epochs 0..k
    exactly once and continues.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rows: list[dict] = []
        self.ended_epoch = None  # an epoch that ended and has no row yet
        self.resumed_at_epoch = None  # the first epoch this run trained after restoring a checkpoint

    @property
    def record(self) -> dict:
        return {"resumed_at_epoch": self.resumed_at_epoch}

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict["rows"])
        if self.rows and self.rows[0]["epoch"] == 0:  # a checkpoint from before epochs were counted from 1
            self.rows = [{**r, "epoch": r["epoch"] + 1} for r in self.rows]
        # The checkpoint holds the rows of every epoch it has trained: training goes on after the last
        # (resumed_at_epoch is Lightning's 0-based index of the next epoch: the count of epochs done).
        self.resumed_at_epoch = self.rows[-1]["epoch"] if self.rows else 0

    def _record(self, trainer: pl.Trainer) -> None:
        if self.ended_epoch is None:
            return
        self.rows.append({"epoch": self.ended_epoch + 1,  # counted from 1, as the console's "epoch 1/30"
                          **{k: float(v) for k, v in sorted(trainer.callback_metrics.items())}})
        self.ended_epoch = None
        fields = list(dict.fromkeys(k for r in self.rows for k in r))

        def write(f):
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.rows)

        # Rewritten whole from the rows: after a resume it drops rows of epochs past the checkpoint.
        write_atomic(self.path, write)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.resumed_at_epoch is not None:
            log.info("resumed from %s at epoch %d", trainer.ckpt_path, self.resumed_at_epoch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.ended_epoch = trainer.current_epoch

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        self._record(trainer)
        checkpoint["callbacks"][self.state_key] = self.state_dict()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(trainer)


class RNGState(pl.Callback):
    """Saves torch (CPU and CUDA), numpy and Python random states in the checkpoint and restores them on
    resume, so the shuffling and augmentation of the remaining epochs are those of an uninterrupted run."""

    def state_dict(self) -> dict:
        name, keys, *rest = np.random.get_state()
        # Plain lists and tensors: torch.load(weights_only=True) rejects numpy arrays.
        return {"torch": torch.get_rng_state(), "numpy": [name, keys.tolist(), *rest], "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def load_state_dict(self, state_dict: dict) -> None:
        torch.set_rng_state(state_dict["torch"])
        name, keys, *rest = state_dict["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
        random.setstate(state_dict["python"])
        if state_dict["cuda"] and torch.cuda.is_available() and len(state_dict["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def checkpoint_problem(path: Path) -> Optional[str]:
    """Why the checkpoint at ``path`` cannot be resumed from, or None if it loads.

    ``torch.save`` writes a zip: its CRCs catch a truncated or altered file without unpickling
    anything; then ``torch.load`` proves that the pickle itself reads back.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                return f"bad CRC in {bad}"
        torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a damaged pickle raises about anything: EOFError, UnpicklingError, RuntimeError
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
    return None


def usable_checkpoint(run_dir: Path) -> Optional[str]:
    """``run_dir/checkpoints/last.ckpt`` if it exists and loads; a damaged one is moved to
    ``last.ckpt.corrupt`` (one warning) and the run starts over: None."""
    path = Path(run_dir) / LAST_CHECKPOINT
    if not path.exists():
        return None
    problem = checkpoint_problem(path)
    if problem is None:
        return str(path)
    move_aside(path, problem)
    return None


def checkpoint_callback(run_dir: Path) -> ModelCheckpoint:
    """One file, last.ckpt, replaced after every epoch: the resume point. Not monitored: nothing is
    selected on validation."""
    return ModelCheckpoint(dirpath=Path(run_dir) / "checkpoints", filename="last", monitor=None,
                           save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=True)
