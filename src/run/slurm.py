"""A sweep on SLURM (``hydra/launcher=slurm``): what the launcher does around hydra-submitit-launcher's.

- Before submission, a job whose run dir holds a finished ``metrics.json`` is skipped, and so is one whose
  run dir another live run holds (``src/run/lock.py``); one line says how many.
- ``sbatch`` refusing the request is one ``error:`` line: sbatch's own message and the overrides to change.
- While it waits, every job that fails, is cancelled or runs out of requeues is one line: what happened and
  the command that resumes it; the others are waited for. A job SLURM requeues (``scontrol requeue``,
  preemption, submitit's requeue at the time limit) is waited for again under the same id.
- At the end one summary line, and exit status 1 unless every job finished.
- Ctrl-C: the submitted jobs keep running (they hold hours of compute); one line says so and gives the
  ``scancel`` command; exit status 130.
"""
import contextlib
import io
import sys
import time
from pathlib import Path
from typing import Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from src.run import zygote
from src.run.errors import UserError
from src.run.jobs import Job, failed_any, plan, resume_command, summary  # noqa: F401  (Job, summary: tests)
from src.run.summary import leave_summary_to_launcher

POLL_S = 10  # seconds between two sacct calls while waiting
RESOURCE_KEYS = ("gpus_per_node", "tasks_per_node", "nodes", "cpus_per_task", "mem_gb", "timeout_min", "partition")


class SlurmError(UserError):
    """SLURM refused the sweep."""


def make_executor(launcher):
    """submitit's executor with the launcher's options, as hydra-submitit-launcher builds it."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = dict(launcher.params)
    folder, max_num_timeout = params.pop("submitit_folder"), params.pop("max_num_timeout")
    executor = submitit.AutoExecutor(cluster="slurm", folder=folder, slurm_max_num_timeout=max_num_timeout)
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    return executor


def submit(launcher, jobs: list[Job]) -> None:
    executor = make_executor(launcher)
    args = [(job.overrides, "hydra.sweep.dir", job.index, f"job_id_for_{job.index}", Singleton.get_state())
            for job in jobs]
    captured = io.StringIO()  # submitit prints sbatch's stderr itself before raising: it goes in the one line
    try:
        with contextlib.redirect_stderr(captured):
            submitted = executor.map_array(launcher, *zip(*args))
    except FileNotFoundError as e:
        raise SlurmError(f"{e.filename} not found: hydra/launcher=slurm needs a SLURM cluster (sbatch, sacct)")
    except Exception as e:
        text = f"{captured.getvalue()}\n{e}"
        said = next((line.strip() for line in text.splitlines() if "error:" in line), text.strip().splitlines()[-1])
        asked = ", ".join(f"{k}={launcher.params.get(k)}" for k in RESOURCE_KEYS)
        raise SlurmError(f"sbatch refused the jobs: {said} (asked for {asked}; change it with "
                         f"hydra.launcher.KEY=VALUE, e.g. hydra.launcher.gpus_per_node=null)") from None
    for job, handle in zip(jobs, submitted):
        job.submitted = handle
    print(f"submitted {len(jobs)} jobs to SLURM as array {submitted[0].job_id.split('_')[0]} "
          f"(logs: {Path(str(launcher.params['submitit_folder'])).parent})", file=sys.stderr, flush=True)


def settle(launcher, job: Job) -> None:
    """Set the outcome of a job SLURM is done with; print one line unless it finished."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    reason = None
    try:
        returned = job.submitted.results()[0]  # task 0 (rank 0 of a DDP job)
    except FailedJobError as e:
        job.outcome = "failed"
        reason = next((line for line in reversed(str(e).splitlines()) if line.strip() and not line.startswith(
            ("-", "You can check", "  - ", "or at paths"))), "the job raised an error")
    except UncompletedJobError:
        state = job.submitted.state
        job.outcome = "cancelled" if state.startswith("CANCELLED") else "failed"
        reason = f"SLURM state {state}" + ("" if job.outcome == "cancelled" else
                                           f", no result (log: {job.submitted.paths.stderr})")
    else:
        if returned.status == JobStatus.FAILED:
            job.outcome, reason = "failed", f"{type(returned._return_value).__name__}: {returned._return_value}"
        else:
            job.record = returned._return_value if isinstance(returned._return_value, dict) else {}
            status = job.record.get("status")
            job.outcome = {"finished": "finished", "locked": "locked"}.get(status, "failed")
            reason = job.record.get("error") or f"status {status}"
            if "timed-out too many times" in str(reason):
                job.outcome = "failed"
                reason = (f"out of requeues: reached the time limit more than hydra.launcher.max_num_timeout="
                          f"{launcher.params.get('max_num_timeout')} times")
    if job.outcome == "locked":
        print(f"not run: {job.run_dir} (SLURM job {job.slurm_id}): {reason}", file=sys.stderr, flush=True)
    elif job.outcome != "finished":
        print(f"{job.outcome}: {job.run_dir} (SLURM job {job.slurm_id}): {reason}; resume: "
              f"{resume_command(launcher, job)}", file=sys.stderr, flush=True)


def wait(launcher, jobs: list[Job]) -> None:
    """Until SLURM is done with every job; Ctrl-C leaves them running (module docstring)."""
    pending, checked = list(jobs), 0.0
    try:
        while pending:
            if time.time() - checked > POLL_S:
                pending[0].submitted.watcher.update()  # one sacct call for all the jobs
                checked = time.time()
            for job in [j for j in pending if j.submitted.done()]:
                settle(launcher, job)
                pending.remove(job)
            if pending:
                time.sleep(1)
    except KeyboardInterrupt:
        ids = " ".join(j.slurm_id for j in pending)
        print(f"interrupted: this command no longer waits, and the {len(pending)} jobs it submitted that are not over "
              f"keep running on SLURM; cancel them with: scancel {ids}", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    leave_summary_to_launcher()  # the summary line below is the sweep's one, also after Ctrl-C
    zygote.stop()  # started for a -m whose config, not its command line, picks SLURM (src/run/zygote.py)
    try:
        jobs = plan(launcher, job_overrides, initial_job_idx, verb="submitted")
    except KeyboardInterrupt:
        print("interrupted: nothing was submitted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    todo = [job for job in jobs if job.outcome is None]
    if todo:
        try:
            submit(launcher, todo)
        except KeyboardInterrupt:
            print("interrupted while submitting: check `squeue` for jobs that went in, and `scancel` them or "
                  "re-run the same command", file=sys.stderr, flush=True)
            raise SystemExit(130) from None
        wait(launcher, todo)
    print(summary(jobs, "slurm"), file=sys.stderr, flush=True)
    if failed_any(jobs):
        raise SystemExit(1)
    return [JobReturn(overrides=job.overrides, status=JobStatus.COMPLETED, _return_value=job.record,
                      working_dir=str(job.run_dir)) for job in jobs]
