"""Where a run's numbers came from: its code and its environment, recorded in ``metrics.json`` and ``eval.json``.

``provenance(run_dir)`` gives the fields every record carries:

- ``git_commit``: the commit the code was checked out at; ``dirty``: whether the work tree differs from it.
  When dirty, ``code.patch`` in the run dir holds the difference (``git diff --binary`` against the commit,
  applicable with ``git apply``) and ``code_patch`` = ``{"file": "code.patch", "sha256": ...}`` names it.
  Untracked files that git does not ignore are part of the patch: a new module not yet added is code
  that ran. Ignored files (outputs/, data/, .venv/) are not.
- ``versions``: Python and the packages whose versions change what a run computes (torch, torchvision,
  Lightning, Hydra, torchmetrics, Optuna, numpy), and the CUDA and cuDNN torch was built with.
- ``gpu``: the name of CUDA device 0; ``cpu``: the CPU model (``/proc/cpuinfo``).

A field that cannot be read (no git, no CUDA, no /proc) is null, never guessed.

``code_moved`` compares a record written before (a resumed run's, or the run a rescoring reads) with the code
running now: one warning line when the commit, the patch or torch differ, and the run goes on.
"""
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Optional

from src.run.records import is_rank_zero, write_atomic

log = logging.getLogger(__name__)

PATCH = "code.patch"
# versions key -> distribution name
PACKAGES = {"torch": "torch", "torchvision": "torchvision", "lightning": "pytorch-lightning", "hydra": "hydra-core",
            "torchmetrics": "torchmetrics", "optuna": "optuna", "numpy": "numpy"}
FIELDS = ("git_commit", "dirty", "code_patch", "versions", "gpu", "cpu")  # what ``fields`` writes
# A record's fields that say how long, where and on what code a run ran, not what it measured: the same job run
# again (by another launcher, on a loaded machine, resumed, after an edit) differs in these alone.
NOT_RESULTS = ("duration_s", "train_images_per_s", "test_images_per_s", "resumed_at_epoch", "machine", *FIELDS)
SOURCE = Path(__file__).resolve().parent  # the code whose commit is recorded (tests point it at a scratch repo)


def _git(*args: str, cwd: Path, env: Optional[dict] = None, text: bool = True):
    """The output of ``git args`` in ``cwd``; None when git is missing or fails (not a repository)."""
    try:
        return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=text, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def code_state(source: Optional[Path] = None) -> tuple[Optional[str], Optional[bytes]]:
    """(commit, patch) of the repository holding ``source``: the patch is the work tree's difference from the
    commit, untracked files that git does not ignore included, b"" when clean; (None, None) without git."""
    source = Path(source or SOURCE)
    top = _git("rev-parse", "--show-toplevel", cwd=source)
    commit = _git("rev-parse", "HEAD", cwd=source)
    # An install copied into an ignored dir of some repository (a venv inside a clone) is not that repository's code.
    if top is None or commit is None or _git("check-ignore", "-q", str(source), cwd=source) is not None:
        return None, None
    top = Path(top.strip())
    index = _git("rev-parse", "--git-path", "index", cwd=top)
    with tempfile.TemporaryDirectory() as scratch:
        # `git add -A` into a copy of the index: the untracked files join the diff, the user's index is untouched.
        scratch_index = Path(scratch) / "index"
        if index is not None and (top / index.strip()).exists():
            # copy2 keeps its mtime, by which git tells a file edited in the second the index was written (racy git)
            shutil.copy2(top / index.strip(), scratch_index)
        env = {**os.environ, "GIT_INDEX_FILE": str(scratch_index)}
        if _git("add", "-A", cwd=top, env=env) is None:
            return commit.strip(), None
        patch = _git("diff", "--cached", "--binary", "HEAD", cwd=top, env=env, text=False)
    return commit.strip(), patch


def _version(distribution: str) -> Optional[str]:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, Optional[str]]:
    import torch  # here, not at the top: reading a record needs no torch

    found = {"python": platform.python_version(), **{k: _version(d) for k, d in PACKAGES.items()}}
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    found.update(cuda=torch.version.cuda, cudnn=None if cudnn is None else str(cudnn))
    return found


def cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        model = ""
    return model or platform.processor() or None


def gpu_name() -> Optional[str]:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def fields(commit: Optional[str], patch: Optional[bytes], patch_file: str = PATCH) -> dict:
    """The record's provenance fields for the code state ``code_state()`` gave, ``patch_file`` naming its patch."""
    code_patch = {"file": patch_file, "sha256": hashlib.sha256(patch).hexdigest()} if patch else None
    return {"git_commit": commit, "dirty": None if patch is None else bool(patch), "code_patch": code_patch,
            "versions": versions(), "gpu": gpu_name(), "cpu": cpu_model()}


def save_patch(run_dir: Path, patch: Optional[bytes], patch_file: str = PATCH) -> None:
    """``run_dir/patch_file`` holds the patch when dirty; a stale one goes when clean (a resumed run records the
    code it ends with)."""
    path = Path(run_dir) / patch_file
    if patch:
        write_atomic(path, lambda f: f.write(patch), binary=True)
    elif patch is not None and path.exists() and is_rank_zero():
        path.unlink()


def provenance(run_dir: Path, patch_file: str = PATCH) -> dict:
    """The record's provenance fields; the patch saved in ``run_dir`` (``save_patch``)."""
    commit, patch = code_state()
    save_patch(run_dir, patch, patch_file)
    return fields(commit, patch, patch_file)


def describe(record: dict) -> str:
    """``commit 1a2b3c4d5e (dirty, patch 9f8e7d6c), torch 2.14.1``: the code a record names, in one phrase."""
    commit = record.get("git_commit")
    text = f"commit {str(commit)[:10]}" if commit not in (None, "unknown") else "no commit"
    if _patch(record):
        text += f" (dirty, patch {_patch(record)[:8]})"
    elif record.get("dirty"):
        text += " (dirty)"
    return text + f", torch {_torch(record) or '?'}"


def _patch(record: dict) -> Optional[str]:
    patch = record.get("code_patch")
    return patch.get("sha256") if isinstance(patch, dict) else None


def _torch(record: dict) -> Optional[str]:
    return record["versions"].get("torch") if isinstance(record.get("versions"), dict) else None


def code_moved(before: dict, now: dict, doing: str, where: Path) -> bool:
    """One warning line when ``before`` (a record written earlier) names another commit, patch or torch than
    ``now``. Only what ``before`` records is compared: a record older than these fields says nothing of its
    patch or torch. The caller goes on either way."""
    if not before or "git_commit" not in before:
        return False
    moved = before.get("git_commit") != now.get("git_commit") or \
        ("dirty" in before and _patch(before) != _patch(now)) or \
        ("versions" in before and _torch(before) != _torch(now))
    if moved:
        log.warning("%s %s: its record names %s; this code is %s", doing, where, describe(before), describe(now))
    return moved
