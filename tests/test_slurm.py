"""Every way a SLURM cluster stops a job, on a real one-node cluster (`make test-slurm`; tests/slurm/cluster.sh).

Each event is run through `hydra/launcher=slurm` on digits and ends with every job finished, with
metrics.json and history.csv equal to an uninterrupted local run of the same jobs (timings and
resumed_at_epoch aside). Needs root (the cluster's daemons run here); the packages are installed if missing.
"""
import getpass
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "tests" / "slurm" / "cluster.sh"
TIMING = ("duration_s", "train_images_per_s", "resumed_at_epoch", "git_commit")
EPOCHS = 8  # ~1 s each here: time to requeue, preempt or cancel a job after its first checkpoint
JOBS = ["case=baseline,case1", "seed=0", f"trainer.max_epochs={EPOCHS}"]
LONG = ["case=case1", "seed=0", "trainer.max_epochs=60"]  # runs past a 1-minute time limit
COMMON = ["trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]
SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
LAUNCHES = itertools.count()


def sh(*command: str, check: bool = True) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120).stdout


def start_cluster(grace: str = "") -> None:
    subprocess.run([str(CLUSTER), "start"], check=True, env={**os.environ, "HAL_SLURM_GRACE": grace}, timeout=900)


@pytest.fixture(scope="module")
def cluster():
    """The cluster: one already up here is used as it is; otherwise one is started, and stopped at the end."""
    if shutil.which("sinfo") and subprocess.run(["sinfo"], capture_output=True).returncode == 0:
        yield "existing"
        return
    start_cluster()
    yield "started"
    stop_cluster()


def stop_cluster() -> None:
    """Once every job has left the node (a job step's slurmstepd outlives a slurmd stopped under it)."""
    sh("scancel", "--user", getpass.getuser(), check=False)  # jobs a failed test left
    end = time.time() + 120
    while sh("squeue", "-h", check=False).strip() and time.time() < end:
        time.sleep(1)
    subprocess.run([str(CLUSTER), "stop"], check=True)


def train(*args: str, log: Path) -> subprocess.Popen:
    """``python -m src.train ARGS`` in the background, its output in ``log`` (a pipe could fill and block)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "src.train", *args], cwd=ROOT, env=ENV, text=True,
                            stdout=open(log, "a"), stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def launch(sweep: Path, *extra: str, jobs=JOBS) -> subprocess.Popen:
    """The sweep on SLURM; each launch logs to a file of its own."""
    log = sweep.parent / f"{sweep.name}.{next(LAUNCHES)}.log"
    return train("-m", *jobs, *COMMON, *SLURM, *extra, f"hydra.sweep.dir={sweep}", log=log)


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    code = proc.wait(timeout=timeout)
    return code, proc.log.read_text()


def reference_runs(directory: Path, jobs: list[str]) -> Path:
    """The same jobs run locally, one after another, never interrupted."""
    proc = train("-m", *jobs, *COMMON, f"hydra.sweep.dir={directory}", log=directory.parent / "reference.log")
    assert proc.wait(timeout=900) == 0, proc.log.read_text()[-3000:]
    return directory


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return reference_runs(tmp_path_factory.mktemp("reference") / "sweep", JOBS)


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory):
    return reference_runs(tmp_path_factory.mktemp("long_reference") / "sweep", LONG)


def results(sweep: Path) -> dict:
    out = {}
    for path in sorted(sweep.glob("*/metrics.json")):
        record = {k: v for k, v in json.loads(path.read_text()).items() if k not in TIMING}
        out[path.parent.name] = (record, (path.parent / "history.csv").read_text())
    return out


def assert_like(sweep: Path, reference: Path) -> dict:
    got, expected = results(sweep), results(reference)
    assert sorted(got) == sorted(expected)
    for job, (record, history) in got.items():
        assert record["status"] == "finished", (job, record)
        assert record == expected[job][0], job
        assert history == expected[job][1], job
    return {job: json.loads((sweep / job / "metrics.json").read_text()) for job in got}


def run_dir(sweep: Path, case: str, epochs: int = EPOCHS) -> Path:
    return sweep / f"case={case},seed=0,trainer.max_epochs={epochs}"


def wait_until(condition, timeout: float = 300, what: str = "condition"):
    end = time.time() + timeout
    while time.time() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def trained_epochs(path: Path) -> int:
    history = path / "history.csv"
    return max(len(history.read_text().splitlines()) - 1, 0) if history.exists() else 0


def job_of(path: Path, epochs: int = 1) -> str:
    """The SLURM job writing ``path`` once it has trained ``epochs`` epochs (its id from the run-dir lock)."""
    wait_until(lambda: trained_epochs(path) >= epochs and (path / ".lock").exists(), what=f"epoch {epochs} of {path}")
    return json.loads((path / ".lock").read_text())["slurm_job"]


def state(job: str) -> str:
    return sh("squeue", "-h", "-j", job, "-o", "%T", check=False).strip()


def job_log(sweep: Path, job: str) -> str:
    return "".join(p.read_text() for p in sweep.glob(f".submitit/{job}/*_log.*"))


def test_a_sweep_finishes_like_local_runs_and_its_rerun_submits_nothing(cluster, reference, tmp_path):
    sweep = tmp_path / "sweep"
    code, log = finish(launch(sweep))
    assert code == 0, log
    assert log.strip().splitlines()[-1] == \
        "slurm: 2 jobs: 2 finished, 0 failed, 0 cancelled, 0 skipped (finished before)"
    assert_like(sweep, reference)
    assert not list(sweep.glob("*/.lock"))
    arrays = sorted(p.name for p in (sweep / ".submitit").iterdir())

    code, log = finish(launch(sweep))
    assert code == 0, log
    assert "skipping 2 of 2 jobs: already finished" in log and "submitted" not in log
    assert sorted(p.name for p in (sweep / ".submitit").iterdir()) == arrays  # no job went to SLURM


def test_scontrol_requeue_resumes_and_is_not_shown_running_while_queued(cluster, reference, tmp_path):
    sweep = tmp_path / "sweep"
    proc = launch(sweep)
    target = run_dir(sweep, "case1")
    job = job_of(target)
    sh("scontrol", "requeue", job)
    wait_until(lambda: state(job) == "PENDING", what="the requeued job pending")
    assert json.loads((target / "metrics.json").read_text())["status"] == "interrupted"
    code, log = finish(proc)
    assert code == 0 and "Traceback" not in log, log
    records = assert_like(sweep, reference)
    assert records[target.name]["resumed_at_epoch"] >= 1
    said = job_log(sweep, job)
    assert "SLURM requeues the job: it resumes by itself" in said and "re-run the same command" not in said


def test_preemption_by_sigterm_requeues_and_resumes(cluster, reference, tmp_path):
    sweep = tmp_path / "sweep"
    proc = launch(sweep)
    jobs = [job_of(run_dir(sweep, case)) for case in ("baseline", "case1")]
    # A job of the `high` partition needs both CPUs: SLURM requeues the two (PreemptMode=REQUEUE, SIGTERM).
    sh("sbatch", "-p", "high", "-c", "2", "-o", "/dev/null", "--wrap", "sleep 1")
    code, log = finish(proc)
    assert code == 0 and "Traceback" not in log, log
    records = assert_like(sweep, reference)
    assert all(r["resumed_at_epoch"] is not None for r in records.values())
    assert all("DUE TO PREEMPTION" in job_log(sweep, job) for job in jobs)


def test_scancel_of_one_job_is_one_line_with_its_resume_command(cluster, reference, tmp_path):
    sweep = tmp_path / "sweep"
    proc = launch(sweep)
    target = run_dir(sweep, "case1")
    sh("scancel", job_of(target))
    code, log = finish(proc)
    assert code == 1 and "Traceback" not in log, log
    line = next(line for line in log.splitlines() if line.startswith("cancelled: "))
    assert line.startswith(f"cancelled: {target} (SLURM job ")
    assert log.strip().splitlines()[-1].startswith("slurm: 2 jobs: 1 finished, 0 failed, 1 cancelled, 0 skipped")
    resume = subprocess.run(shlex.split(line.split("; resume: ", 1)[1]), cwd=ROOT, env=ENV, capture_output=True,
                            text=True, timeout=600)
    assert resume.returncode == 0, resume.stderr[-3000:]
    assert "slurm: 1 job: 1 finished" in resume.stderr
    records = assert_like(sweep, reference)
    assert records[target.name]["resumed_at_epoch"] >= 1


def test_ctrl_c_leaves_the_jobs_running_and_says_how_to_cancel_them(cluster, reference, tmp_path):
    sweep = tmp_path / "sweep"
    proc = launch(sweep)
    jobs = [job_of(run_dir(sweep, case)) for case in ("baseline", "case1")]
    proc.send_signal(signal.SIGINT)
    code, log = finish(proc, timeout=60)
    assert code == 130 and "Traceback" not in log, log
    assert log.strip().splitlines()[-1].endswith(f"keep running on SLURM; cancel them with: scancel {' '.join(jobs)}")
    wait_until(lambda: all(state(job) == "" or state(job) == "COMPLETED" for job in jobs), what="the jobs to end")
    assert_like(sweep, reference)


def test_the_same_sweep_twice_at_once_has_one_writer_per_run_dir(cluster, long_reference, tmp_path):
    sweep = tmp_path / "sweep"
    first = launch(sweep, jobs=LONG)  # long enough to be running when the second command looks
    target = run_dir(sweep, "case1", epochs=60)
    job = job_of(target)
    code, log = finish(launch(sweep, jobs=LONG))
    assert code == 1 and "Traceback" not in log, log
    assert f"not submitted: {target}: being written by SLURM job {job} (host" in log
    assert log.strip().splitlines()[-1].startswith("slurm: 1 job: 0 finished, 0 failed, 0 cancelled, 0 skipped "
                                                   "(finished before), 1 not run")
    code, log = finish(first)
    assert code == 0, log
    assert_like(sweep, long_reference)


def test_a_time_limit_requeues_with_the_defaults_and_resumes(cluster, long_reference, tmp_path):
    sweep = tmp_path / "sweep"
    code, log = finish(launch(sweep, "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=30", jobs=LONG))
    assert code == 0 and "Traceback" not in log, log
    records = assert_like(sweep, long_reference)
    assert all(r["resumed_at_epoch"] is not None for r in records.values())
    assert "timed-out" in "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.err"))


def test_a_time_limit_without_requeues_is_one_line_and_the_printed_command_resumes(cluster, long_reference, tmp_path):
    sweep = tmp_path / "sweep"
    code, log = finish(launch(sweep, "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=30",
                              "hydra.launcher.max_num_timeout=0", jobs=LONG))
    assert code == 1 and "Traceback" not in log, log
    line = next(line for line in log.splitlines() if line.startswith("failed: "))
    assert "out of requeues: reached the time limit more than hydra.launcher.max_num_timeout=0 times" in line
    for _ in range(5):  # each attempt resumes from the last checkpoint and goes on until its own limit
        resume = subprocess.run(shlex.split(line.split("; resume: ", 1)[1]), cwd=ROOT, env=ENV, capture_output=True,
                                text=True, timeout=600)
        if resume.returncode == 0:
            break
    assert resume.returncode == 0, resume.stderr[-3000:]
    assert_like(sweep, long_reference)


def test_sbatch_refusing_the_request_is_one_line(cluster, tmp_path):
    proc = train("-m", *JOBS, *COMMON, *SLURM, "hydra.launcher.gpus_per_node=1", f"hydra.sweep.dir={tmp_path / 's'}",
                 log=tmp_path / "s.log")
    assert proc.wait(timeout=300) == 1
    lines = proc.log.read_text().strip().splitlines()
    assert lines[-1].startswith("error: sbatch refused the jobs: sbatch: error: Invalid generic resource (gres) "
                                "specification (asked for gpus_per_node=1,")
    assert "Traceback" not in "".join(lines)


def test_preemption_with_the_user_signal_requeues_and_resumes(cluster, reference, tmp_path):
    """Last: it restarts the cluster with GraceTime and preempt_send_user_signal (SIGUSR2 first)."""
    if cluster == "existing":
        pytest.skip("needs the cluster this suite starts (it restarts it with GraceTime)")
    stop_cluster()
    start_cluster(grace="20")
    sweep = tmp_path / "sweep"
    proc = launch(sweep)
    jobs = [job_of(run_dir(sweep, case)) for case in ("baseline", "case1")]
    sh("sbatch", "-p", "high", "-c", "2", "-o", "/dev/null", "--wrap", "sleep 1")
    code, log = finish(proc)
    assert code == 0 and "Traceback" not in log, log
    records = assert_like(sweep, reference)
    assert all(r["resumed_at_epoch"] is not None for r in records.values())
    said = "".join(job_log(sweep, job) for job in jobs)
    assert "Caught signal SIGUSR2" in said and "this job is preempted" in said


DDP = ["case=baseline,case1", "seed=0", "trainer.max_epochs=2", "trainer.devices=2", "trainer.strategy=ddp"]


def test_a_sweep_of_ddp_jobs_runs_one_task_per_rank_like_local_ddp(cluster, tmp_path):
    """hydra/launcher=slurm asks for one task per device (tasks_per_node=${trainer.devices}); SLURM starts the
    ranks and Lightning reads them from its environment. Equal to the same DDP jobs run locally."""
    # The reference: each job a single local run (a second DDP job in one local multirun process fails: its
    # rank 1 of the first job is gone while the process group lives on).
    reference = tmp_path / "reference"
    for case in ("baseline", "case1"):
        name = f"case={case},seed=0,trainer.devices=2,trainer.max_epochs=2,trainer.strategy=ddp"
        proc = train(f"case={case}", *DDP[1:], *COMMON, f"hydra.run.dir='{reference / name}'",
                     log=tmp_path / f"{case}.log")
        assert proc.wait(timeout=600) == 0, proc.log.read_text()[-3000:]
    sweep = tmp_path / "sweep"
    code, log = finish(launch(sweep, jobs=DDP))
    assert code == 0 and "Traceback" not in log, log
    records = assert_like(sweep, reference)
    assert sorted(records) == ["case=baseline,seed=0,trainer.devices=2,trainer.max_epochs=2,trainer.strategy=ddp",
                               "case=case1,seed=0,trainer.devices=2,trainer.max_epochs=2,trainer.strategy=ddp"]
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.err"))
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in logs
