"""The last line of a run, and the last lines of a sweep.

- ``summary_line(record, run_dir)``: run dir, test error under each protocol, status, duration, threads.
- ``sweep_summary(sweep_dir, ...)``: the counts of the sweep's jobs by status (finished, failed, skipped,
  interrupted; running or debug ones when there are any), the sweep dir and the report command. It reads
  only the jobs' ``metrics.json``, so any launcher can print it.
- ``SweepSummary``: the Hydra callback that prints it at the end of a local multirun (conf/config.yaml,
  ``hydra.callbacks``), also when a signal ends the sweep early. A launcher that prints its own summary
  (``src/run/slurm.py``: it knows the SLURM states) calls ``leave_summary_to_launcher()``: a sweep prints one.
"""
import atexit
import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src.run.console import python_command, shown
from src.run.records import METRICS, read_record

log = logging.getLogger(__name__)
_LAUNCHER_SUMMARY = False  # set by a launcher that prints the sweep's summary line itself


def test_errors(record: dict) -> str:
    """``1.23 % (oracle), 2.34 % (inferred), ...``: the test error under each protocol the record has."""
    protocols = [(p, record.get(f"test_error_{p}")) for p in ("oracle", "inferred", "shuffled")]
    errors = [f"{v:.2f} % ({p})" for p, v in protocols if v is not None]
    if len(errors) == 3 and len({v for _, v in protocols}) == 1:  # the superclass fed changes nothing
        errors = [f"{protocols[0][1]:.2f} % (oracle = inferred = shuffled)"]
    errors += [f"{v:.2f} % (masked {name})" for name, v in (record.get("test_error_masked") or {}).items()]
    if not errors and record.get("test_error") is not None:
        errors = [f"{record['test_error']:.2f} %"]
    return ", ".join(errors) or "none"


def summary_line(record: dict, run_dir: Path) -> str:
    """``run <dir>: test error 1.23 % (oracle), 2.34 % (inferred), ...; finished in 12.3 s; 1 thread``."""
    threads = record.get("threads")
    line = f"run {shown(run_dir)}: test error {test_errors(record)}; {record.get('status')} in {record.get('duration_s')} s"
    return line + (f"; {threads} thread{'s' if threads != 1 else ''}" if threads is not None else "")


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job dirs of a sweep dir: those holding a ``metrics.json``, at any depth."""
    return sorted(p.parent for p in Path(sweep_dir).rglob(METRICS))


def sweep_summary(sweep_dir: Path, jobs: Optional[Iterable[Path]] = None, skipped: Iterable[Path] = ()) -> str:
    """``sweep <dir>: 23 finished, 1 failed, 1 skipped, 0 interrupted; report: <python> -m src.report <dir>``.

    ``jobs``: the job dirs of this sweep (default: every job dir under ``sweep_dir``); ``skipped``: those
    that had finished before it started (they are counted as skipped, not finished)."""
    jobs = [Path(j) for j in (job_dirs(sweep_dir) if jobs is None else jobs)]
    skipped = {Path(j) for j in skipped}
    counts = Counter("skipped" if job in skipped else read_record(job).get("status") or "not started"
                     for job in jobs)
    parts = [f"{counts.pop(status, 0)} {status}" for status in ("finished", "failed", "skipped", "interrupted")]
    parts += [f"{n} {status}" for status, n in sorted(counts.items())]  # running (killed), debug, not started
    return f"sweep {shown(sweep_dir)}: {', '.join(parts)}; report: {python_command()} -m src.report {shown(sweep_dir)}"


def leave_summary_to_launcher() -> None:
    """This process's launcher prints the sweep's summary line: ``SweepSummary`` prints none."""
    global _LAUNCHER_SUMMARY
    _LAUNCHER_SUMMARY = True


class SweepSummary(Callback):
    """Prints ``sweep_summary`` for the jobs of this multirun when it ends, or when a signal stops it."""

    def __init__(self) -> None:
        self.sweep_dir: Optional[Path] = None
        self.jobs: list[Path] = []
        self.skipped: list[Path] = []

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir, self.jobs, self.skipped = Path(config.hydra.sweep.dir), [], []
        atexit.register(self._print)  # a signal ends the sweep with SystemExit: on_multirun_end never runs

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        job = Path(config.hydra.runtime.output_dir)
        self.jobs.append(job)
        if read_record(job).get("status") == "finished":
            self.skipped.append(job)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        atexit.unregister(self._print)
        self._print()

    def _print(self) -> None:
        if self.sweep_dir is not None and not _LAUNCHER_SUMMARY:
            # Jobs that ran elsewhere (a cluster launcher) never called on_job_start here: read the sweep dir.
            print(sweep_summary(self.sweep_dir, self.jobs or None, self.skipped), flush=True)
