"""A sweep on this machine (``hydra/launcher=local``, the default of ``-m``): several jobs at once, each in a
worker process that stays for the next job (``src/run/worker.py``; without GPU forked by a zygote that imported
a job's modules while the launcher composed the sweep, ``src/run/zygote.py``), with the semantics of the SLURM
launcher.

- Before any job: a job whose run dir holds a finished ``metrics.json`` is skipped, one another live run writes
  is not run (``src/run/jobs.py``, as on SLURM); a job asking for hardware this machine lacks is one
  ``error:`` line and exit status 1 (``src/run/resources.py``).
- How many at once: ``hydra.launcher.n_jobs`` (``auto``: ``resources.auto_jobs``, one line says what and why).
  A GPU job runs with ``CUDA_VISIBLE_DEVICES`` of its GPUs (``resources.GpuSlots``): ``jobs_per_gpu`` per GPU,
  ``trainer.devices=N`` GPUs for a DDP job.
- While it works: one line per job that ends, with "k of N done" and the time left at the rate so far; each
  job's own output is in its run dir's log.
- One failed job does not stop the others. At the end one summary line, as SLURM's, and exit status 1 unless
  every job finished.
- Ctrl-C or SIGTERM: no new job starts; the signal goes to every running job (its process group: DDP ranks
  too), which stops at its next safe point and records ``interrupted`` (``src/run/signals.py``); then the
  summary, and exit status 128 + the signal. A second signal stops the jobs at once.
- SIGKILL of the launcher: the workers die with it (``worker.die_with_parent``; forked ones with the zygote,
  which dies with the launcher); the rerun resumes their jobs from their last checkpoints (the locks of dead
  pids are stale, ``src/run/lock.py``).
"""
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Optional, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus

from src.run import zygote
from src.run.console import python_command, shown
from src.run.errors import ConfigError
from src.run.jobs import Job, failed_any, plan, summary
from src.run.resources import (GpuSlots, Machine, auto_jobs, check_hardware, devices_of, needs_of, on_gpu,
                               this_machine, visible_devices)
from src.run.summary import leave_summary_to_launcher
from src.run.worker import DIE_WITH_PARENT

SIDE_BY_SIDE = "HAL_JOBS_SIDE_BY_SIDE"  # how many jobs the local launcher runs at once (tune.n_jobs=auto reads it)


@dataclass
class Worker:
    process: object  # a subprocess.Popen, or a zygote.Forked: .pid (its process group) and .wait()
    jobs: Connection  # the launcher writes jobs here
    answers: Connection  # and reads how they ended here
    gpus: tuple = ()
    job: Optional[Job] = None

    def signal(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)  # the worker leads its own process group (start_new_session)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        try:
            self.jobs.send_bytes(b"")
        except OSError:
            pass
        self.jobs.close()


def worker_env(gpus: tuple, machine: Machine, side_by_side: int) -> dict:
    env = {**os.environ, DIE_WITH_PARENT: "1", SIDE_BY_SIDE: str(side_by_side)}
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = visible_devices(gpus)
    elif machine.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU job (trainer.accelerator=cpu) leaves the GPUs to the others
    return env


def start_worker(gpus: tuple, machine: Machine, side_by_side: int) -> Worker:
    """A worker forked by the zygote (``src/run/zygote.py``: its imports done), or else a new process."""
    read_jobs, write_jobs = os.pipe()
    read_answers, write_answers = os.pipe()
    env = worker_env(gpus, machine, side_by_side)
    forker = zygote.running()
    process = forker.fork(env, (read_jobs, write_answers)) if forker else None
    if process is None:
        # Its own session: Ctrl-C in the terminal reaches the launcher alone, which passes it on exactly once.
        spec = getattr(sys.modules["__main__"], "__spec__", None)  # python -m src.train: src.train
        process = subprocess.Popen([sys.executable, "-m", "src.run.worker", str(read_jobs), str(write_answers),
                                    spec.name if spec is not None else ""],
                                   pass_fds=(read_jobs, write_answers), env=env, start_new_session=True)
    os.close(read_jobs), os.close(write_answers)
    return Worker(process, Connection(write_jobs, readable=False), Connection(read_answers, writable=False), gpus)


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {seconds % 3600 / 60:.0f} min"


@dataclass
class Pool:
    """Runs ``jobs`` with at most ``n`` at once (module docstring)."""
    launcher: object
    n: int
    machine: Machine
    jobs_per_gpu: int = 1
    workers: list = field(default_factory=list)
    stopping: Optional[int] = None  # the stop signal received

    def __post_init__(self) -> None:
        self.slots = GpuSlots(self.machine.gpus, self.jobs_per_gpu)

    def gpus_for(self, job: Job) -> int:
        return devices_of(job.config.trainer) if on_gpu(job.config, self.machine) else 0

    def dispatch(self, job: Job) -> bool:
        """Start ``job`` on a worker if there is room for it now."""
        busy = [w for w in self.workers if w.job is not None]
        if len(busy) >= self.n:
            return False
        need = self.gpus_for(job)
        gpus = self.slots.take(need) if need else ()
        if gpus is None:
            return False
        idle = [w for w in self.workers if w.job is None]
        worker = next((w for w in idle if w.gpus == gpus), None)
        if worker is None:
            if len(self.workers) >= self.n and idle:  # CUDA_VISIBLE_DEVICES is read once per process
                self.retire(idle[0])
            worker = start_worker(gpus, self.machine, self.n)
            self.workers.append(worker)
        payload = (self.launcher, job.config, Singleton.get_state(), str(job.run_dir))
        import cloudpickle  # as submitit pickles the launcher into each SLURM job

        worker.job = job
        worker.jobs.send_bytes(cloudpickle.dumps(payload))
        if self.stopping:  # the signal came while this job was being handed over
            worker.signal(self.stopping)
        return True

    def retire(self, worker: Worker) -> None:
        if worker.job is not None:  # only when the launcher itself fails: stop the job rather than wait for it
            worker.signal(signal.SIGTERM)
        worker.close()
        self.workers.remove(worker)
        worker.process.wait()
        worker.answers.close()

    def settle(self, worker: Worker, done: int, total: int, began: float) -> None:
        job, worker.job = worker.job, None
        self.slots.give_back(worker.gpus)
        try:
            answer = worker.answers.recv()
        except (EOFError, OSError):
            code = worker.process.wait()
            answer = {"outcome": "interrupted" if self.stopping else "failed", "record": {}, "stop": True,
                      "error": f"its worker process died ({'signal ' + signal.Signals(-code).name if code < 0 else f'exit status {code}'})"}
        job.outcome, job.record = answer["outcome"], answer["record"] or job.record
        # A DDP job's worker is not reused: the ranks Lightning started for it are gone, its process group is not.
        if answer["stop"] or devices_of(job.config.trainer) > 1:
            self.workers.remove(worker)
            worker.close()
            worker.process.wait()
            worker.answers.close()
        elapsed = time.time() - began
        left = "" if done == total else f"; about {duration(elapsed / done * (total - done))} left"
        why = f": {answer['error']}" if answer["error"] and job.outcome != "interrupted" else ""
        log = f"; log: {shown(job.run_dir / (job.config.hydra.job.name + '.log'))}" if job.outcome == "failed" else ""
        print(f"{job.outcome}: {shown(job.run_dir)}{why} ({done} of {total} done in "
              f"{duration(elapsed)}{left}{log})", file=sys.stderr, flush=True)

    def on_signal(self, signum: int, frame) -> None:
        first = self.stopping is None
        self.stopping = signum
        if first:
            print(f"{signal.Signals(signum).name}: no new job starts; the running ones stop at their next safe point "
                  f"and record interrupted (again to stop them at once)", file=sys.stderr, flush=True)
        for worker in self.workers:
            if worker.job is not None:
                worker.signal(signum)

    def run(self, todo: Sequence[Job]) -> None:
        queue, total, done, began = list(todo), len(todo), 0, time.time()
        previous = {s: signal.signal(s, self.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while True:
                while queue and not self.stopping and self.dispatch(queue[0]):
                    queue.pop(0)
                busy = {w.answers: w for w in self.workers if w.job is not None}
                if not busy:
                    break
                for ready in wait(list(busy), timeout=1.0):
                    done += 1
                    self.settle(busy[ready], done, total, began)
        finally:
            for worker in self.workers:  # every worker told first, then waited for: they exit side by side
                worker.close()
            for worker in list(self.workers):
                self.retire(worker)
            for s, handler in previous.items():
                signal.signal(s, handler)


def n_jobs_of(params: dict, jobs: Sequence[Job], machine: Machine) -> int:
    """``hydra.launcher.n_jobs``: an integer, or ``auto`` with the line that says what it chose and why."""
    n_jobs, per_gpu, memory = params.get("n_jobs", "auto"), params.get("jobs_per_gpu", 1), params.get("mem_per_job_gb")
    if not (isinstance(per_gpu, int) and per_gpu >= 1):
        raise ConfigError(f"hydra.launcher.jobs_per_gpu must be an integer >= 1, got {per_gpu!r}")
    if n_jobs == "auto":
        n, line = auto_jobs(needs_of([j.config for j in jobs], machine, memory), machine, len(jobs), per_gpu, memory)
        print(line, file=sys.stderr, flush=True)
        return n
    if not (isinstance(n_jobs, int) and n_jobs >= 1):
        raise ConfigError(f"hydra.launcher.n_jobs must be auto or an integer >= 1, got {n_jobs!r}")
    return n_jobs


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    leave_summary_to_launcher()  # the summary line below is the sweep's one, also after Ctrl-C
    jobs = plan(launcher, job_overrides, initial_job_idx, verb="run")
    todo = [job for job in jobs if job.outcome is None]
    machine = this_machine()
    try:
        for job in todo:
            check_hardware(job.config, machine)
        n = n_jobs_of(launcher.params, todo, machine) if todo else 0
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    pool = Pool(launcher, n, machine, launcher.params.get("jobs_per_gpu", 1))
    try:
        if todo:
            pool.run(todo)
    finally:
        zygote.stop()  # every worker is gone
    for job in todo:
        job.outcome = job.outcome or "interrupted"  # never started: a signal came first
    report = f"report: {python_command()} -m src.report {shown(launcher.config.hydra.sweep.dir)}"
    print(f"{summary(jobs, 'local')}; {report}", file=sys.stderr, flush=True)
    if pool.stopping:
        raise SystemExit(128 + pool.stopping)
    if failed_any(jobs):
        raise SystemExit(1)
    return [JobReturn(overrides=job.overrides, status=JobStatus.COMPLETED, _return_value=job.record,
                      working_dir=str(job.run_dir)) for job in jobs]
