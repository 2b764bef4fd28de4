"""What a run shows on the console, and what its ``train.log`` keeps of it.

- ``quiet()``: Lightning's known noise is silenced at its source, by its logging levels and warnings filters
  scoped to those messages; every other warning still shows, as a ``py.warnings`` log record. Lightning's
  loggers hand their records to Hydra's handlers (conf/config.yaml, ``hydra.job_logging``): one stream to
  the console (INFO on stdout, WARNING and above on stderr) and the same lines in ``<run dir>/train.log``.
- ``EpochLines`` (``src/run/epoch_lines.py``, apart so that this module imports no Lightning: a sweep's
  launcher uses it): one line per epoch in ``train.log``.
- ``python_command``, ``shown``: the interpreter that is running and a path, as printed commands give them.
"""
import logging
import os
import shlex
import sys
import warnings
from pathlib import Path

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
