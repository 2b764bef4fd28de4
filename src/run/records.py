"""Files a run leaves behind, written so that a reader never sees half of one.

``metrics.json`` is the run's record: ``status`` is ``running`` while it goes, ``finished`` only once
every field is written, ``interrupted`` after SIGTERM/SIGINT (``src.run.signals``), ``failed`` (with
``error``) otherwise. ``src.report`` counts only ``finished``.

Only global rank 0 writes: under DDP every rank runs the same code, and ``write_atomic`` (hence
``write_json`` and ``record_failure``) does nothing on the others. The rank is Lightning's
``rank_zero_only.rank``: read from the launcher's environment at import, set by the strategy after.

A damaged file left by a killed attempt (a half-written ``metrics.json`` from another tool, a
truncated checkpoint) is moved aside to ``<name>.corrupt`` with one warning, and the run starts over
from what is left, instead of crashing on every re-run.
"""
import json
import logging
import os
import platform
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

METRICS = "metrics.json"


def is_rank_zero() -> bool:
    from pytorch_lightning.utilities import rank_zero_only  # here: src.report and --help need no Lightning

    return rank_zero_only.rank == 0


def write_atomic(path: Path, write: Callable[[IO], None], binary: bool = False) -> None:
    """``write(file)`` into a temp file beside ``path``, then rename it over ``path`` (atomic on POSIX).
    A no-op on every rank but global rank 0."""
    if not is_rank_zero():
        return
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") if binary else open(tmp, "w", newline="") as f:
        write(f)
    os.replace(tmp, path)


def write_json(path: Path, record: dict) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(record, indent=2)))


def move_aside(path: Path, why: str) -> Path:
    """Rename a damaged ``path`` to ``<path>.corrupt`` (replacing an older one), with one warning line."""
    path = Path(path)
    target = path.with_name(path.name + ".corrupt")
    if is_rank_zero():
        os.replace(path, target)
        log.warning("%s is damaged (%s); moved it to %s and starting over", path, why, target.name)
    return target


def read_record(run_dir: Path) -> dict:
    """The run's ``metrics.json``; {} (not finished) when there is none or it is damaged."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
        if not isinstance(record, dict):
            raise ValueError(f"a JSON {type(record).__name__}, not an object")
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        move_aside(path, str(e).splitlines()[0] if str(e) else type(e).__name__)
        return {}
    return record


def record_status(run_dir: Path, cfg: DictConfig, **fields) -> dict:
    """Update the run's record with ``fields`` (``status=...``) and write it back."""
    record = read_record(run_dir)
    # A job that stops before train() writes its record (a bad mapping) still needs its report group.
    for key, path in (("dataset", "dataset.name"), ("case", "case.name"), ("depth", "model.depth"),
                      ("seed", "seed"), ("epochs", "trainer.max_epochs")):
        record.setdefault(key, OmegaConf.select(cfg, path, default=None, throw_on_resolution_failure=False))
    record.update(fields)
    write_json(Path(run_dir) / METRICS, record)
    return record


def record_failure(run_dir: Path, error: BaseException, cfg: DictConfig) -> dict:
    return record_status(run_dir, cfg, status="failed", error=f"{type(error).__name__}: {error}")


def machine() -> str:
    """Where this process runs, for the report's line on a sweep: ``host: CPU model, N cores[, GPU name]``."""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        cpu = ""
    import torch  # here, not at the top: reading a record needs no torch

    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{socket.gethostname()}: {cpu or platform.processor() or platform.machine()}, {os.cpu_count()} cores{gpu}"
