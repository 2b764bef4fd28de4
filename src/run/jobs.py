"""The jobs of a sweep as this project's launchers see them (``hydra/launcher=slurm``: ``src/run/slurm.py``;
``hydra/launcher=local``: ``src/run/local.py``).

- ``Job``: one job's overrides, run dir and composed config, and how it ended.
- ``plan(launcher, job_overrides, initial_job_idx)``: the jobs, with those whose run dir holds a finished
  ``metrics.json`` marked ``skipped`` and those another live run writes marked ``locked`` (one line each way).
- ``summary(jobs, where)``: the sweep's one summary line, and ``failed_any``: whether its exit status is 1.
"""
import os
import shlex
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from src.run.lock import describe, live_holder
from src.run.records import read_record


@dataclass
class Job:
    index: int
    overrides: list[str]
    run_dir: Path
    submitted: Any = None  # the submitit job (SLURM)
    outcome: Optional[str] = None  # finished | skipped | failed | cancelled | interrupted | locked
    record: Optional[dict] = None
    config: Optional[DictConfig] = None  # the job's composed config (its hydra node included)

    @property
    def slurm_id(self) -> str:
        return self.submitted.job_id if self.submitted is not None else "-"


def job_config(launcher, overrides: Sequence[str], index: int) -> DictConfig:
    """The job's config as Hydra's ``run_job`` will compose it in the job."""
    config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
    with open_dict(config.hydra.job):
        config.hydra.job.num, config.hydra.job.id = index, f"job_id_for_{index}"
    return config


def run_dir_of(config: DictConfig) -> Path:
    """The job's run dir, as ``run_job`` will make it: sweep dir / sweep subdir."""
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(config)  # the subdir interpolates hydra.job.override_dirname
    try:
        return Path(str(config.hydra.sweep.dir)) / str(OmegaConf.select(config, "hydra.sweep.subdir"))
    finally:
        if previous is not None:
            HydraConfig.instance().cfg = previous


def plan(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int, verb: str = "submitted") -> list[Job]:
    """Every job of the sweep; finished ones ``skipped``, ones a live run writes ``locked`` (module docstring)."""
    jobs = []
    for i, overrides in enumerate(job_overrides, initial_job_idx):
        config = job_config(launcher, overrides, i)
        jobs.append(Job(i, list(overrides), run_dir_of(config), config=config))
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    for job in jobs:
        job.record = read_record(job.run_dir)
        holder = live_holder(job.run_dir)
        if job.record.get("status") == "finished":
            job.outcome = "skipped"
        elif holder is not None:
            job.outcome = "locked"
            print(f"not {verb}: {job.run_dir}: being written by {describe(holder)}", file=sys.stderr, flush=True)
    skipped = sum(job.outcome == "skipped" for job in jobs)
    if skipped:
        print(f"skipping {skipped} of {len(jobs)} jobs: already finished (delete a job's metrics.json to run it "
              f"again)", file=sys.stderr, flush=True)
    return jobs


def resume_command(launcher, job: Job, launcher_override: str = "") -> str:
    """The command that runs this one job again, in the same run dir (it resumes from last.ckpt)."""
    hydra = [o for o in launcher.config.hydra.overrides.hydra if not o.startswith(("hydra.mode=", "hydra.sweep.dir="))]
    python = os.path.relpath(sys.executable) if not os.path.relpath(sys.executable).startswith("..") else sys.executable
    flags = [a for a in sys.argv[1:] if a.split("=")[0] in ("--config-dir", "-cd", "--config-name", "-cn")]
    return shlex.join([python, "-m", "src.train", "-m", *flags, *hydra,
                       f"hydra.sweep.dir={launcher.config.hydra.sweep.dir}", *job.overrides])


def failed_any(jobs: Sequence[Job]) -> bool:
    return any(job.outcome not in ("finished", "skipped") for job in jobs)


def summary(jobs: Sequence[Job], where: str = "slurm") -> str:
    """``slurm: 6 jobs: 1 finished, 1 failed, 2 cancelled, 1 skipped (finished before)``; ``local: ...`` says
    ``interrupted`` where SLURM says ``cancelled`` (a stop signal, not scancel)."""
    counts = Counter(job.outcome for job in jobs)
    stopped = "cancelled" if where == "slurm" else "interrupted"
    line = (f"{where}: {len(jobs)} job{'' if len(jobs) == 1 else 's'}: {counts['finished']} finished, {counts['failed']} failed, "
            f"{counts[stopped]} {stopped}, {counts['skipped']} skipped (finished before)")
    if counts["locked"]:
        line += f", {counts['locked']} not run (another run writes their dir)"
    if failed_any(jobs):
        line += "; re-run the same command to resume the others"
    return line
