"""Files a run leaves behind, written so that a reader never sees half of one.

``metrics.json`` is the run's record: ``status`` is ``running`` while it goes, ``finished`` only once
every field is written, ``failed`` (with ``error``) otherwise. ``src.report`` counts only ``finished``.
"""
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import IO

from omegaconf import DictConfig, OmegaConf

METRICS = "metrics.json"


def write_atomic(path: Path, write: Callable[[IO], None], binary: bool = False) -> None:
    """``write(file)`` into a temp file beside ``path``, then rename it over ``path`` (atomic on POSIX)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") if binary else open(tmp, "w", newline="") as f:
        write(f)
    os.replace(tmp, path)


def write_json(path: Path, record: dict) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(record, indent=2)))


def read_record(run_dir: Path) -> dict:
    path = Path(run_dir) / METRICS
    return json.loads(path.read_text()) if path.exists() else {}


def record_failure(run_dir: Path, error: BaseException, cfg: DictConfig) -> dict:
    record = read_record(run_dir)
    # A job that fails before train() writes its record (a bad mapping) still needs its report group.
    for key, path in (("dataset", "dataset.name"), ("case", "case.name"), ("depth", "model.depth"),
                      ("seed", "seed"), ("epochs", "trainer.max_epochs")):
        record.setdefault(key, OmegaConf.select(cfg, path, default=None, throw_on_resolution_failure=False))
    record.update(status="failed", error=f"{type(error).__name__}: {error}")
    write_json(Path(run_dir) / METRICS, record)
    return record


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
