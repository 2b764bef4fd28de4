"""Lightning callbacks that ``train.py`` adds to every run: what the report and a resumed run need.

- ``EpochHistory``: ``history.csv``, one row per epoch with every logged epoch metric (Figs 2/4/6).
- ``PerEpochTestLoss``: test loss/error per epoch for the paper's loss figures, logged as ``curve/*``.
- ``AuxiliaryScores``: ``aux_scores.npz``, the auxiliary score of every training image (Figs 3/5/7).
- ``RNGState``: saves the random generators in the checkpoint, so a resumed run continues exactly.
"""
import contextlib
import csv
import logging
import random
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import ModelCheckpoint

from src.data.pipeline import normalize
from src.records import write_atomic

log = logging.getLogger(__name__)



def _clean_batches(trainer: pl.Trainer, split: str, device: torch.device):
    """Batches of a split normalised but never augmented, with the true superclass."""
    datamodule = trainer.datamodule
    images, superclass, label = datamodule.splits[split]
    mean, std = datamodule.mean.to(device), datamodule.std.to(device)
    step = datamodule.eval_batch_size
    for i in range(0, len(label), step):
        x = images[i:i + step].to(device, non_blocking=True)
        yield normalize(x, mean, std), superclass[i:i + step].to(device), label[i:i + step].to(device)


@contextlib.contextmanager
def _eval_mode(trainer: pl.Trainer, module: pl.LightningModule):
    """No grad, eval-mode BatchNorm (running statistics untouched), the Trainer's precision."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            yield
    finally:
        module.train(was_training)


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

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict["rows"])
        # The checkpoint holds the rows of every epoch it has trained: training goes on after the last.
        self.resumed_at_epoch = self.rows[-1]["epoch"] + 1 if self.rows else 0

    def _record(self, trainer: pl.Trainer) -> None:
        if self.ended_epoch is None:
            return
        self.rows.append({"epoch": self.ended_epoch,
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


class PerEpochTestLoss(pl.Callback):
    """Test loss and error after every epoch, logged as ``curve/test_loss`` and ``curve/test_error``.

    Only for the paper's loss-per-epoch figures: a no-grad, eval-mode pass that changes no weights, no
    BatchNorm statistics and no random state, and nothing reads it back (no early stopping, no model
    selection: the final weights are tested).
    """

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loss_sum, wrong, n = 0.0, 0, 0
        with _eval_mode(trainer, pl_module):
            for images, superclass, label in _clean_batches(trainer, "test", pl_module.device):
                logits, _ = pl_module(images, superclass)
                loss_sum += F.cross_entropy(logits.float(), label, reduction="sum").item()
                wrong += (logits.argmax(1) != label).sum().item()
                n += len(label)
        pl_module.log("curve/test_loss", loss_sum / n)
        pl_module.log("curve/test_error", 100 * wrong / n)


class AuxiliaryScores(pl.Callback):
    """At the end of training, ``aux_scores.npz``: ``score`` (the auxiliary score a), ``superclass`` and
    ``label`` of every training image, with the true superclass fed and no augmentation (Figs 3/5/7)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not pl_module.has_auxiliary:
            return
        scores, superclasses, labels = [], [], []
        with _eval_mode(trainer, pl_module):
            for images, superclass, label in _clean_batches(trainer, "train", pl_module.device):
                _, a = pl_module(images, superclass)
                scores.append(a.squeeze(1).float().cpu())
                superclasses.append(superclass.cpu())
                labels.append(label.cpu())
        write_atomic(self.path, lambda f: np.savez(
            f, score=torch.cat(scores).numpy(), superclass=torch.cat(superclasses).numpy(),
            label=torch.cat(labels).numpy()), binary=True)


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


def last_checkpoint(run_dir: Path):
    """``run_dir/checkpoints/last.ckpt`` if an earlier, interrupted attempt left one, else None."""
    path = Path(run_dir) / "checkpoints" / "last.ckpt"
    return str(path) if path.exists() else None


def run_callbacks(run_dir: Path, test_curve: bool, checkpoint: bool) -> list[pl.Callback]:
    """The callbacks of every run besides ``EpochHistory``; ``checkpoint`` must match the Trainer's
    ``enable_checkpointing`` (Lightning refuses a ModelCheckpoint otherwise)."""
    callbacks = [AuxiliaryScores(Path(run_dir) / "aux_scores.npz"), RNGState()]
    if test_curve:
        callbacks.append(PerEpochTestLoss())
    if checkpoint:
        # One file, last.ckpt, replaced after every epoch: the resume point. Not monitored: nothing is
        # selected on validation.
        callbacks.append(ModelCheckpoint(dirpath=Path(run_dir) / "checkpoints", filename="last", monitor=None,
                                         save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=True))
    return callbacks
