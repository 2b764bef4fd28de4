"""``EpochLines``: one line per epoch in ``train.log``. When stdout is not a terminal (a log file, a pipe,
SLURM) there is no progress bar, and about five of those lines are shown on the console instead.
Apart from ``src/run/console.py`` because it imports Lightning, which a sweep's launcher never needs."""
import logging
import math

import pytorch_lightning as pl

from src.run.console import progress


class EpochLines(pl.Callback):
    """One line per training epoch: epoch, training and validation loss and error. ``train.log`` gets every
    one; the console every ⌈epochs / lines⌉-th and the last: about ``lines`` of them."""

    def __init__(self, lines: int = 5, console: bool = True) -> None:
        self.lines, self.console = lines, console  # console=False: train.log only (a progress bar is shown)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The module logs train/* in its own on_train_epoch_end, after this hook: read them at the next
        # epoch's start or at the end of training (``_line``). Validation ran before this hook.
        self._ended = trainer.current_epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._line(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._line(trainer)

    def _line(self, trainer: pl.Trainer) -> None:
        epoch, self._ended = getattr(self, "_ended", None), None
        if epoch is None or not trainer.is_global_zero:
            return
        metrics, epochs = trainer.callback_metrics, trainer.max_epochs  # fast_dev_run makes it 1
        every = max(1, math.ceil(epochs / self.lines))
        parts = [f"epoch {epoch + 1}/{epochs}"]
        for key in ("train/loss", "train/error", "val/loss", "val/error"):
            if key in metrics:
                parts.append(f"{key} {float(metrics[key]):.4g}")
        shown_here = self.console and (epoch + 1 == epochs or (epoch + 1) % every == 0)
        progress.log(logging.INFO if shown_here else logging.DEBUG, "  ".join(parts))
