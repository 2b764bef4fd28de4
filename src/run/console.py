"""What a run shows on the console, and what its ``train.log`` keeps of it.

- ``quiet()``: Lightning's known noise is silenced at its source, by its logging levels and warnings filters
  scoped to those messages; every other warning still shows, as a ``py.warnings`` log record. Lightning's
  loggers hand their records to Hydra's handlers (conf/config.yaml, ``hydra.job_logging``): one stream to
  the console (INFO on stdout, WARNING and above on stderr) and the same lines in ``<run dir>/train.log``.
- ``EpochLines``: one line per epoch in ``train.log``. When stdout is not a terminal (a log file, a pipe,
  SLURM) there is no progress bar, and about five of those lines are shown on the console instead.
- ``python_command``, ``shown``: the interpreter that is running and a path, as printed commands give them.
"""
import logging
import math
import os
import shlex
import sys
import warnings
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig

log = logging.getLogger(__name__)
progress = logging.getLogger("src.progress")  # DEBUG: every epoch reaches train.log, INFO ones the console too
progress.setLevel(logging.DEBUG)

# (message regex, why it is noise here)
NOISE = (
    (r"The `srun` command is available on your system but is not used", "printed whenever SLURM is installed"),
    (r".*isinstance.treespec, LeafSpec.* is deprecated", "inside Lightning, not ours to fix"),
    (r"The number of training batches .* is smaller than the logging interval", "everything is logged per epoch"),
    (r".*does not have many workers", "the batches are slices of tensors in memory: workers would only copy"),
    (r"Checkpoint directory .* exists and is not empty", "a resumed run writes into its own checkpoint dir"),
)
# Loggers whose INFO lines are noise: the device summary, the litlogger "Tip", "Loading `train_dataloader`",
# "`Trainer.fit` stopped", and "Received SIGTERM" (src/run/signals.py sends SIGINT through that path).
QUIET_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                 "pytorch_lightning.trainer.connectors.signal_connector")


def quiet() -> None:
    """Silence the known noise; route Lightning's loggers and Python's warnings through logging."""
    for message, _why in NOISE:
        warnings.filterwarnings("ignore", message=message)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # pytorch_lightning adds its own stderr handler when imported before logging is configured (its
    # __init__.py): then nothing of it reaches train.log. Hand its records to the root's handlers instead.
    if logging.getLogger().handlers:
        for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                if type(handler) is logging.StreamHandler:
                    logger.removeHandler(handler)
            logger.propagate = True
        logging.captureWarnings(True)


class BelowWarning(logging.Filter):
    """The stdout handler's filter: WARNING and above go to the stderr handler instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


def to_log_file(line: str, level: int = logging.ERROR) -> None:
    """``line`` into the run's log file(s) only: for lines already printed on the console directly."""
    record = logging.LogRecord(__name__, level, __file__, 0, line, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and not _is_stderr(handler):
            handler.handle(record)


def _is_stderr(handler: logging.FileHandler) -> bool:
    """Whether the handler's file is stderr's (a job of hydra/launcher=local): the line is in it already."""
    try:
        a, b = os.fstat(handler.stream.fileno()), os.fstat(2)
    except (OSError, ValueError, AttributeError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def progress_bar(cfg: DictConfig) -> bool:
    """A progress bar only when asked for and stdout is a terminal: in a log file it is kilobytes of redraws."""
    return bool(cfg.trainer.enable_progress_bar) and sys.stdout.isatty()


def python_command() -> str:
    """The running interpreter, as typed from the current dir (``.venv/bin/python``), for printed commands."""
    path = Path(sys.executable)
    try:
        relative = path.relative_to(Path.cwd())
        return shlex.quote(str(relative) if len(relative.parts) > 1 else f"./{relative}")
    except ValueError:
        return shlex.quote(str(path))


def shown(path: Path) -> str:
    """``path`` relative to the current dir when under it (as the user typed it), else absolute."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


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
