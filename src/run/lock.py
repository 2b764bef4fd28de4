"""One writer per run dir: ``run_dir/.lock`` names the run that writes there.

The lock holds the SLURM job id when the run is a SLURM job (else null), the host, the pid and its start
time (``/proc/<pid>/stat``), and when it was taken. A second run for the same dir refuses with one line
naming the holder (``RunLocked``) and touches nothing there. A lock is stale, and is taken over with one
warning, when its holder is over: its SLURM job has left the queue (``squeue``) or is this same job in an
earlier attempt (SLURM requeues a job under its id), or, without SLURM, its pid is gone from this host or
now belongs to another process. A holder on another host without a SLURM job cannot be checked: the
refusal says which file to delete.

Only global rank 0 locks: under DDP the other ranks of the same run write nothing (``src/run/records.py``).
"""
import contextlib
import json
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from src.run.errors import UserError
from src.run.records import is_rank_zero

log = logging.getLogger(__name__)

LOCK = ".lock"
# squeue states of a job that has not ended (a requeued job is PENDING again, under the same id).
ACTIVE = frozenset({"PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD",
                    "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "PREEMPTED"})


class RunLocked(UserError):
    """Another run writes to this run dir."""


def slurm_job() -> Optional[str]:
    """This process's SLURM job as ``squeue -j`` and ``scancel`` take it (``12_3`` for an array task)."""
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def _start_time(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # A zombie has exited and only waits for its parent to reap it; a killed launcher's worker can stay one for
    # good where PID 1 does not reap orphans (containers): it writes nothing, its lock is stale.
    return None if fields[0] in ("Z", "X") else fields[19]


def me() -> dict:
    pid = os.getpid()
    return {"slurm_job": slurm_job(), "host": socket.gethostname(), "pid": pid, "pid_start": _start_time(pid),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def describe(holder: dict) -> str:
    job = f"SLURM job {holder['slurm_job']} " if holder.get("slurm_job") else ""
    return f"{job}(host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('since')})"


def slurm_job_state(job: str) -> Optional[str]:
    """The job's squeue state; None once it has left the queue. OSError when squeue cannot be run."""
    result = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=60)
    states = result.stdout.split()
    return states[0] if result.returncode == 0 and states else None


def stale_because(holder: dict) -> Optional[str]:
    """Why ``holder`` no longer writes (then its lock may be taken over), or None while it may."""
    job = holder.get("slurm_job")
    if job:
        if job == slurm_job():
            return f"it is this SLURM job {job}, in an earlier attempt"
        try:
            state = slurm_job_state(job)
        except (OSError, subprocess.SubprocessError):
            return None  # no squeue here: cannot tell
        return None if state in ACTIVE else f"SLURM job {job} has ended"
    if holder.get("host") != socket.gethostname():
        return None
    start = _start_time(int(holder.get("pid", -1)))
    if start is None:
        return f"pid {holder.get('pid')} is gone"
    if holder.get("pid_start") not in (None, start):
        return f"pid {holder.get('pid')} is another process now"
    return None


def read_holder(run_dir: Path) -> Optional[dict]:
    """The holder of the run dir's lock: None when there is none, {} when it is unreadable."""
    try:
        return json.loads((Path(run_dir) / LOCK).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def live_holder(run_dir: Path) -> Optional[dict]:
    """The holder of the run dir's lock if it still writes there, else None (the launcher's check)."""
    holder = read_holder(run_dir)
    return holder if holder and stale_because(holder) is None else None


def _take(path: Path, holder: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(holder, f)
    return True


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` while the run writes there; ``RunLocked`` if a live run holds it."""
    if not is_rank_zero():
        yield
        return
    path = Path(run_dir) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = me()
    for _ in range(10):
        if _take(path, mine):
            break
        holder = read_holder(path.parent)
        if holder == {} and time.time() - path.stat().st_mtime < 5:
            time.sleep(0.5)  # being written this instant
            continue
        why = "its file is unreadable" if holder == {} else stale_because(holder) if holder else "it is gone"
        if why is None:
            raise RunLocked(f"{run_dir} is being written by {describe(holder)}: not starting a second writer "
                            f"(if that run is over, delete {path})")
        if holder:
            log.warning("taking over the lock of %s from %s: %s", run_dir, describe(holder), why)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        raise RunLocked(f"cannot take the lock {path}: other runs keep taking it")
    try:
        yield
    finally:
        if read_holder(path.parent) == mine:
            path.unlink()
