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

from src.run.provenance import NOT_RESULTS

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
# The events CI runs (.ci/run, under its 30 minutes): requeue, time limit, scancel, a second launch, a refusal.
# `make test-slurm` runs every test (docs/development.md).
CI = pytest.mark.slurm_ci

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "tests" / "slurm" / "cluster.sh"
TIMING = NOT_RESULTS  # timings, and the code, work tree and machine a run ran on
EPOCHS = 8  # ~1 s each here: time to requeue, preempt or cancel a job after its first checkpoint
JOBS = ["case=baseline,case1", "seed=0", f"trainer.max_epochs={EPOCHS}"]
LONG = ["case=case1", "seed=0", "trainer.max_epochs=60"]  # runs past a 1-minute time limit
# The time-limit signal sent by the test once the job has a checkpoint, as submitit's own tests simulate a time-out
# (`SlurmJob._interrupt(timeout=True)`: `scancel --signal USR2`): SLURM's timer sends it at any point of the 30 s
# before `signal_delay_s`, on a loaded machine before the job's first checkpoint. Under 10 minutes submitit counts
# any limit as reached, so the job goes through the time limit's code; the limit itself is never reached.
LIMIT = ["hydra.launcher.timeout_min=5", "hydra.launcher.signal_delay_s=30"]
COMMON = ["trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "threads=1"]  # equal runs need 1 thread
SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
LAUNCHES = itertools.count()
STARTED: list[subprocess.Popen] = []  # this test's commands: the teardown ends those still running
# Before submitit's handler exists (python starting, the job unpickled), SIGUSR2 kills the job: sitecustomize.py
# (on PYTHONPATH) holds a requeued attempt there, so that the test can signal it at that point.
HOLD = """import os, pathlib, time
if os.environ.get("SLURM_JOB_ID") and int(os.environ.get("SLURM_RESTART_COUNT", "0")) >= 1:
    held = pathlib.Path(os.environ["HAL_TEST_HOLD"])
    if not held.exists():
        held.write_text(os.environ["SLURM_JOB_ID"])
        time.sleep(300)
"""


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


def cancel_every_job() -> str:
    """``scancel`` every job of this user and wait until the queue is empty; what is still queued after 3 min."""
    sh("scancel", "--user", getpass.getuser(), check=False)
    end = time.time() + 180
    while (queued := sh("squeue", "-h", check=False).strip()) and time.time() < end:
        time.sleep(1)
    return queued


def stop_cluster() -> None:
    """Once every job has left the node (a job step's slurmstepd outlives a slurmd stopped under it)."""
    cancel_every_job()
    subprocess.run([str(CLUSTER), "stop"], check=True)


@pytest.fixture(autouse=True)
def empty_cluster(cluster, tmp_path):
    """Every test leaves the cluster empty whatever its outcome (a failed assertion, a timeout): its commands
    still running are killed and its jobs cancelled, so that they cannot hold the node's CPUs in the next test.
    On a cluster this suite did not start, only the test's own jobs (its .submitit dirs) are cancelled."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if cluster == "started":
        queued = cancel_every_job()
    else:
        jobs = sorted({p.name.split("_")[0] for p in tmp_path.rglob(".submitit/*") if p.is_dir()})
        if jobs:
            sh("scancel", *jobs, check=False)
        wait_until(lambda: not any(state(job) for job in jobs), timeout=180, what="the test's jobs to leave")
        queued = ""
    assert not queued, f"jobs left after scancel: {queued}"


def default_sigint() -> None:
    """Ctrl-C reaches the command as in a terminal, even when the suite itself runs in the background: a shell
    without job control starts background commands with SIGINT ignored, and Python keeps it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def train(*args: str, log: Path, env: dict = ENV) -> subprocess.Popen:
    """``python -m src.train ARGS`` in the background, its output in ``log`` (a pipe could fill and block)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "src.train", *args], cwd=ROOT, env=env, text=True,
                            stdout=open(log, "a"), stderr=subprocess.STDOUT, preexec_fn=default_sigint)
    proc.log = log
    STARTED.append(proc)
    return proc


def launch(sweep: Path, *extra: str, jobs=JOBS, env: dict = ENV) -> subprocess.Popen:
    """The sweep on SLURM; each launch logs to a file of its own."""
    log = sweep.parent / f"{sweep.name}.{next(LAUNCHES)}.log"
    return train("-m", *jobs, *COMMON, *SLURM, *extra, f"hydra.sweep.dir={sweep}", log=log, env=env)


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


@CI
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


@CI
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


@CI
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


@CI
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


def time_limit_signal(sweep: Path, job: str) -> None:
    """What SLURM sends ``signal_delay_s`` before the time limit (LIMIT), as the job's sbatch script asks."""
    assert "#SBATCH --signal=USR2@30" in "".join(p.read_text() for p in (sweep / ".submitit").rglob("*.sh"))
    sh("scancel", "--signal=USR2", job)


@CI
def test_a_time_limit_requeues_with_the_defaults_and_resumes(cluster, long_reference, tmp_path):
    sweep = tmp_path / "sweep"
    proc = launch(sweep, *LIMIT, jobs=LONG)
    job = job_of(run_dir(sweep, "case1", epochs=60))
    time_limit_signal(sweep, job)
    code, log = finish(proc)
    assert code == 0 and "Traceback" not in log, log
    records = assert_like(sweep, long_reference)
    assert all(r["resumed_at_epoch"] is not None for r in records.values())
    assert "this job is timed-out" in job_log(sweep, job)


@CI
def test_a_job_signalled_before_its_handler_exists_fails_in_one_line_and_its_rerun_resumes(cluster, long_reference,
                                                                                          tmp_path):
    """The time limit's signal reaches a requeued attempt before submitit's handler exists (python still starting):
    it dies of the signal. That is a failed job, one line with the command that resumes it, never a silent loss."""
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "sitecustomize.py").write_text(HOLD)
    env = {**ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(hold), ENV.get("PYTHONPATH")])),
           "HAL_TEST_HOLD": str(hold / "held")}
    sweep = tmp_path / "sweep"
    proc = launch(sweep, *LIMIT, jobs=LONG, env=env)
    target = run_dir(sweep, "case1", epochs=60)
    job = job_of(target)
    time_limit_signal(sweep, job)  # submitit requeues the job
    wait_until(lambda: (hold / "held").exists(), what="the requeued attempt held before submitit's handler")
    time_limit_signal(sweep, job)
    code, log = finish(proc)
    assert code == 1 and "Traceback" not in log, log
    line = next(line for line in log.splitlines() if line.startswith("failed: "))
    assert line.startswith(f"failed: {target} (SLURM job {job}): SLURM state FAILED, no result (log: ")
    assert log.strip().splitlines()[-1].startswith("slurm: 1 job: 0 finished, 1 failed, 0 cancelled, 0 skipped")
    resume = subprocess.run(shlex.split(line.split("; resume: ", 1)[1]), cwd=ROOT, env=ENV, capture_output=True,
                            text=True, timeout=600)
    assert resume.returncode == 0, resume.stderr[-3000:]
    records = assert_like(sweep, long_reference)
    assert records[target.name]["resumed_at_epoch"] >= 1


def test_a_time_limit_without_requeues_is_one_line_and_the_printed_command_resumes(cluster, long_reference, tmp_path):
    sweep = tmp_path / "sweep"
    proc = launch(sweep, *LIMIT, "hydra.launcher.max_num_timeout=0", jobs=LONG)
    target = run_dir(sweep, "case1", epochs=60)
    job = job_of(target)
    time_limit_signal(sweep, job)
    code, log = finish(proc)
    assert code == 1 and "Traceback" not in log, log
    line = next(line for line in log.splitlines() if line.startswith("failed: "))
    assert line.startswith(f"failed: {target} (SLURM job {job}): out of requeues: reached the time limit more than "
                           f"hydra.launcher.max_num_timeout=0 times; resume: ")
    resume = subprocess.run(shlex.split(line.split("; resume: ", 1)[1]), cwd=ROOT, env=ENV, capture_output=True,
                            text=True, timeout=600)
    assert resume.returncode == 0, resume.stderr[-3000:]
    records = assert_like(sweep, long_reference)
    assert records[target.name]["resumed_at_epoch"] >= 1


@CI
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
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.*"))  # Lightning's line: .out or .err
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in logs
