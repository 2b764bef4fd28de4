"""``hydra/launcher=local`` (src/run/local.py, src/run/worker.py, src/run/resources.py): a sweep's jobs side by side,
the same results as one after another, the SLURM launcher's semantics on signals, kills and failures."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from src.run.resources import GB, GpuSlots, Machine, Needs, auto_jobs, check_hardware, no_gpu_driver, visible_devices
from src.run.errors import ConfigError
from src.run.provenance import NOT_RESULTS

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ["experiment=smoke", "trainer.accelerator=cpu", "threads=1"]


BARRIER = """
import pathlib, time
from hydra.experimental.callback import Callback

class Barrier(Callback):
    def __init__(self, dir, n):
        self.dir, self.n = pathlib.Path(dir), n

    def on_job_start(self, config, **kwargs):
        self.dir.mkdir(exist_ok=True)
        (self.dir / str(config.hydra.job.num)).touch()
        deadline = time.time() + 600
        while len(list(self.dir.iterdir())) < self.n and time.time() < deadline:
            time.sleep(0.05)
"""


def barrier(tmp_path: Path, n: int) -> list[str]:
    """Overrides that hold each job at its start until ``n`` jobs have started (a Hydra callback, run in the
    workers): the jobs then train side by side however long each worker's start-up took on a loaded machine."""
    (tmp_path / "hooks").mkdir(exist_ok=True)
    (tmp_path / "hooks" / "barrier.py").write_text(BARRIER)
    return ["+hydra.callbacks.barrier._target_=barrier.Barrier", f"+hydra.callbacks.barrier.dir={tmp_path / 'started'}",
            f"+hydra.callbacks.barrier.n={n}"]


PARENT = """
import os, pathlib
from hydra.experimental.callback import Callback

class Parent(Callback):
    def __init__(self, file):
        self.file = pathlib.Path(file)

    def on_job_start(self, config, **kwargs):
        command = pathlib.Path(f"/proc/{os.getppid()}/cmdline").read_bytes().split(b"\\0")[1:3]
        with open(self.file, "a") as f:
            f.write(" ".join(part.decode() for part in command) + "\\n")
"""


def parents(tmp_path: Path, name: str) -> list[str]:
    """Overrides that write the command of each job's worker's parent process (``-m src.train``: the launcher
    spawned it, ``-m src.run.zygote``: the zygote forked it) into ``tmp_path/name``."""
    (tmp_path / "hooks").mkdir(exist_ok=True)
    (tmp_path / "hooks" / "parent.py").write_text(PARENT)
    return ["+hydra.callbacks.parent._target_=parent.Parent", f"+hydra.callbacks.parent.file={tmp_path / name}"]


def sweep(sweep_dir: Path, *args: str, background: bool = False, **env: str):
    """``python -m src.train -m`` on digits into ``sweep_dir``, ``env`` added; its console in ``<sweep_dir>.log``."""
    sweep_dir.parent.mkdir(parents=True, exist_ok=True)
    log = open(f"{sweep_dir}.log", "a")  # a file, not a pipe: a full pipe blocks
    command = [sys.executable, "-m", "src.train", "-m", *SWEEP, *args, f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, **env,
           "PYTHONPATH": os.pathsep.join([str(sweep_dir.parent / "hooks"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    if not background:
        proc.wait(timeout=600)
    return proc


def console(sweep_dir: Path) -> str:
    return Path(f"{sweep_dir}.log").read_text()


def records(sweep_dir: Path) -> dict:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")}


def without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in NOT_RESULTS}


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def descendants(pid: int) -> list[int]:
    found = children(pid)
    return found + [d for child in found for d in descendants(child)]


def command_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(condition, timeout: float = 300) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def checkpointed(sweep_dir: Path) -> list[Path]:
    return list(sweep_dir.glob("*/checkpoints/last.ckpt"))


@pytest.mark.slow
def test_results_equal_those_of_the_basic_launcher_one_after_another(tmp_path):
    # Bug this catches: a worker that runs a job with another job's overrides or state left by the one before.
    args = ["case=baseline,case1", "seed=0,1", "trainer.max_epochs=2"]
    basic = sweep(tmp_path / "basic", *args, "hydra/launcher=basic")
    local = sweep(tmp_path / "local", *args, "hydra.launcher.n_jobs=2")
    assert basic.returncode == 0 and local.returncode == 0, console(tmp_path / "local")[-3000:]
    expected, got = records(tmp_path / "basic"), records(tmp_path / "local")
    assert len(expected) == 4 and sorted(got) == sorted(expected)
    for job in expected:
        assert without_timing(got[job]) == without_timing(expected[job]), job
    text = console(tmp_path / "local")
    assert "local: 4 jobs: 4 finished, 0 failed, 0 interrupted, 0 skipped (finished before)" in text
    assert [line.split(" (")[1].split(" done")[0] for line in text.splitlines() if line.startswith("finished: ")] == [
        f"{k} of 4" for k in range(1, 5)]
    # The jobs' own output is in their logs, not on the console.
    assert "test error" not in text
    assert all(f"run {tmp_path / 'local' / job}: test error" in (tmp_path / "local" / job / "train.log").read_text()
               for job in got)


@pytest.mark.slow  # two sweeps, four worker start-ups: about 30 s on an idle 2-core VM
def test_sigkill_of_the_launcher_leaves_no_training_and_the_rerun_trains_only_what_is_missing(tmp_path):
    # Bug this catches: workers without a parent-death signal keep training after the launcher is killed; on a
    # machine without GPU, a zygote that outlives the launcher, or workers it forked that outlive it.
    target = tmp_path / "sweep"
    args = ["case=case1,case2", "seed=0", "trainer.max_epochs=40", "hydra.launcher.n_jobs=2"]
    proc = sweep(target, *args, *barrier(tmp_path, 2), background=True)
    assert wait_for(lambda: len(checkpointed(target)) == 2), console(target)[-3000:]
    processes = descendants(proc.pid)
    if no_gpu_driver():  # the zygote, and the two workers it forked
        zygote = [pid for pid in children(proc.pid) if "-m src.run.zygote" in command_of(pid)]
        assert len(processes) == 3 and len(zygote) == 1 and len(children(zygote[0])) == 2, processes
    else:
        assert len(processes) == 2, processes
    proc.kill()
    proc.wait()
    assert wait_for(lambda: not any(alive(pid) for pid in processes), timeout=10), "a process outlived the launcher"
    assert {r["status"] for r in records(target).values()} == {"running"}

    # The rerun: a finished job is skipped; the killed ones resume from their checkpoints.
    done = target / "case=case2,seed=0,trainer.max_epochs=40"
    finished = {**json.loads((done / "metrics.json").read_text()), "status": "finished"}
    (done / "metrics.json").write_text(json.dumps(finished))  # as if it had finished before the kill
    (done / "checkpoints" / "last.ckpt").unlink()
    rerun = sweep(target, *args)
    text = console(target)
    assert rerun.returncode == 0, text[-3000:]
    assert "skipping 1 of 2 jobs: already finished" in text
    assert "local: 2 jobs: 1 finished, 0 failed, 0 interrupted, 1 skipped (finished before)" in text
    resumed = records(target)["case=case1,seed=0,trainer.max_epochs=40"]
    assert resumed["status"] == "finished" and resumed["resumed_at_epoch"] >= 1
    assert json.loads((done / "metrics.json").read_text()) == finished  # untouched


@pytest.mark.slow  # two sweeps
@pytest.mark.skipif(not no_gpu_driver(), reason="the zygote serves machines without GPU")
def test_without_gpu_the_zygote_forks_the_workers_with_the_results_of_spawned_ones(tmp_path):
    # Bug this catches: a sweep that never uses the zygote (every worker pays the imports again, after the
    # launcher's start-up), or forked workers unlike spawned ones (state the zygote set leaking into the jobs).
    args = ["case=baseline,case1", "seed=0", "trainer.max_epochs=2", "hydra.launcher.n_jobs=2"]
    forked = sweep(tmp_path / "forked", *args, *parents(tmp_path, "forked.txt"))
    spawned = sweep(tmp_path / "spawned", *args, *parents(tmp_path, "spawned.txt"), HAL_ZYGOTE="0")
    assert forked.returncode == 0 and spawned.returncode == 0, console(tmp_path / "forked")[-3000:]
    assert (tmp_path / "forked.txt").read_text().splitlines() == ["-m src.run.zygote"] * 2
    assert (tmp_path / "spawned.txt").read_text().splitlines() == ["-m src.train"] * 2
    expected, got = records(tmp_path / "spawned"), records(tmp_path / "forked")
    assert len(expected) == 2 and sorted(got) == sorted(expected)
    for job in expected:
        assert without_timing(got[job]) == without_timing(expected[job]), job


@pytest.mark.slow  # two sweeps, four worker start-ups: about 30 s on an idle 2-core VM
def test_sigint_stops_every_running_job_at_a_safe_point_and_the_rerun_resumes_them(tmp_path):
    # Bug this catches: a launcher that dies on Ctrl-C without passing it on (its jobs record nothing, or
    # keep running), or one that passes it twice (the jobs stop at once, mid-step).
    target = tmp_path / "sweep"
    args = ["case=case1,case2", "seed=0", "trainer.max_epochs=40", "hydra.launcher.n_jobs=2"]
    proc = sweep(target, *args, *barrier(tmp_path, 2), background=True)
    assert wait_for(lambda: len(checkpointed(target)) == 2), console(target)[-3000:]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130, console(target)[-3000:]
    text = console(target)
    assert {k: (r["status"], r["signal"]) for k, r in records(target).items()} == {
        f"case={c},seed=0,trainer.max_epochs=40": ("interrupted", "SIGINT") for c in ("case1", "case2")}, text[-3000:]
    assert "local: 2 jobs: 0 finished, 0 failed, 2 interrupted, 0 skipped (finished before)" in text
    for job in target.glob("*/train.log"):
        assert "stopped: " in job.read_text()

    rerun = sweep(target, *args)
    assert rerun.returncode == 0, console(target)[-3000:]
    assert {(r["status"], r["resumed_at_epoch"] >= 1) for r in records(target).values()} == {("finished", True)}


def test_one_job_that_raises_leaves_the_others_running_and_the_exit_status_says_so(tmp_path):
    # Bug this catches: a failed job ending the sweep, or a sweep that exits 0 with a failed job.
    target = tmp_path / "sweep"
    proc = sweep(target, "case=baseline,custom", "seed=0", "trainer.max_epochs=1", "hydra.launcher.n_jobs=2")
    text = console(target)
    assert proc.returncode == 1, text[-3000:]
    assert {k.split(",")[0]: r["status"] for k, r in records(target).items()} == {
        "case=baseline": "finished", "case=custom": "failed"}
    assert "local: 2 jobs: 1 finished, 1 failed, 0 interrupted, 0 skipped (finished before)" in text
    failed = next(line for line in text.splitlines() if line.startswith("failed: "))
    assert "case=custom needs" in failed and "train.log" in failed


def test_gpu_slots_pack_jobs_per_gpu_and_give_a_ddp_job_n_gpus(monkeypatch):
    # Bug this catches: every job on GPU 0, or a DDP job given the same GPU twice.
    slots = GpuSlots(gpus=4, jobs_per_gpu=2)
    taken = [slots.take(1) for _ in range(8)]
    assert taken == [(0,), (1,), (2,), (3,), (0,), (1,), (2,), (3,)]
    assert slots.take(1) is None  # 4 GPUs × 2 jobs: full
    slots.give_back((1,)), slots.give_back((2,))
    assert slots.take(2) == (1, 2)  # a DDP job: two distinct GPUs
    slots = GpuSlots(gpus=4, jobs_per_gpu=1)
    assert slots.take(2) == (0, 1) and slots.take(1) == (2,) and slots.take(2) is None and slots.take(1) == (3,)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")  # the launcher itself sees GPUs 4-7 only
    assert visible_devices((0, 2)) == "4,6"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_devices((3,)) == "3"


def test_the_zygote_starts_for_a_sweep_on_the_local_launcher_without_gpu_only(monkeypatch):
    # Bug this catches: a zygote importing beside the basic launcher's jobs (bench.sweep's basic run slowed by a
    # core's worth of imports), beside --help or --cfg, or on a machine with a GPU driver.
    from src.run import resources, zygote

    monkeypatch.delenv("HAL_ZYGOTE", raising=False)
    monkeypatch.delenv("HAL_DIE_WITH_PARENT", raising=False)
    monkeypatch.setattr(resources, "no_gpu_driver", lambda: True)
    assert zygote.wanted(["-m", "seed=0,1"]) and zygote.wanted(["--multirun", "hydra/launcher=local", "seed=0,1"])
    for argv in (["seed=0"], ["-m", "hydra/launcher=basic"], ["-m", "hydra/launcher=slurm_gpu"], ["-m", "--cfg", "job"],
                 ["-m", "--help"], ["-m", "--info=searchpath"]):
        assert not zygote.wanted(argv), argv
    monkeypatch.setenv("HAL_ZYGOTE", "0")
    assert not zygote.wanted(["-m", "seed=0,1"])
    monkeypatch.delenv("HAL_ZYGOTE")
    monkeypatch.setattr(resources, "no_gpu_driver", lambda: False)
    assert not zygote.wanted(["-m", "seed=0,1"])


def test_a_zygote_that_died_leaves_the_workers_to_be_spawned(monkeypatch):
    # Bug this catches: a launcher that waits forever on a dead zygote, or fails instead of spawning its workers.
    import socket

    from src.run import local, zygote

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.close()  # what the launcher sees of a zygote that died
    dead = zygote.Zygote(subprocess.Popen(["true"]), ours)
    monkeypatch.setattr(zygote, "_running", dead)
    worker = local.start_worker((), Machine(cores=2, gpus=0, available_bytes=None), 1)
    try:
        assert isinstance(worker.process, subprocess.Popen)
        assert "src.run.worker" in worker.process.args
    finally:
        worker.close()
        assert worker.process.wait(timeout=120) == 0  # told there is no job: it exits
        worker.answers.close()
    zygote.stop()


def test_each_job_runs_with_the_cuda_visible_devices_of_its_slot(monkeypatch):
    # The pool with a faked device count: 2 GPUs, 2 jobs per GPU; the worker processes are recorded, not started.
    # Bug this catches: a worker reused for a job on other GPUs (CUDA_VISIBLE_DEVICES is read once per process).
    from src.run import local
    from src.run.jobs import Job

    started = []

    def fake_worker(gpus, machine, side_by_side):
        worker = local.Worker(process=SimpleNamespace(wait=lambda: 0), jobs=FakeConnection(), answers=FakeConnection(),
                              gpus=gpus)
        started.append(local.worker_env(gpus, machine, side_by_side)["CUDA_VISIBLE_DEVICES"])
        return worker

    class FakeConnection:
        def send_bytes(self, data):
            pass

        def close(self):
            pass

    monkeypatch.setattr(local, "start_worker", fake_worker)
    monkeypatch.setattr("cloudpickle.dumps", lambda payload: b"job")
    machine = Machine(cores=32, gpus=2, available_bytes=None)
    pool = local.Pool(launcher=None, n=4, machine=machine, jobs_per_gpu=2)

    def job(devices, accelerator="gpu"):
        config = OmegaConf.create({"trainer": {"accelerator": accelerator, "devices": devices}})
        return Job(0, [], Path("x"), config=config)

    assert [pool.dispatch(job(1)) for _ in range(4)] == [True] * 4
    assert started == ["0", "1", "0", "1"]
    assert not pool.dispatch(job(1))  # both GPUs hold two jobs
    for worker in pool.workers[:2]:  # the jobs on GPUs 0 and 1 end
        pool.slots.give_back(worker.gpus)
        worker.job = None
    assert pool.dispatch(job(2)) and started[-1] == "0,1"  # a DDP job on both: a new worker, an idle one retired
    assert len(pool.workers) == 4
    assert pool.dispatch(job(1, accelerator="cpu")) and started[-1] == ""  # a CPU job sees no GPU
    assert not pool.dispatch(job(1, accelerator="cpu"))  # n=4 jobs at once already


def test_auto_takes_the_smallest_bound_and_says_which():
    machine = Machine(cores=32, gpus=8, available_bytes=int(100 * GB))
    n, line = auto_jobs(Needs(cores=1, peak_bytes=int(2 * GB), gpus=1), machine, jobs=120, jobs_per_gpu=3)
    assert n == 24 and "bound by 8 GPUs × jobs_per_gpu=3 ÷ 1 per job" in line
    n, line = auto_jobs(Needs(cores=2, peak_bytes=int(2 * GB)), Machine(cores=32, gpus=0, available_bytes=None), 120)
    assert n == 16 and "bound by 32 cores ÷ 2 per job" in line
    n, line = auto_jobs(Needs(cores=1, peak_bytes=int(GB)), Machine(cores=2, gpus=0, available_bytes=int(8 * GB)), 3)
    assert n == 2
    n, line = auto_jobs(Needs(cores=1, peak_bytes=int(GB)), Machine(cores=16, gpus=0, available_bytes=int(8 * GB)), 3)
    assert n == 3 and "one per job of the sweep" in line


def test_auto_with_little_free_memory_picks_fewer_jobs_and_says_so():
    # Bug this catches: a rule that forgets memory, and starts more runs than fit (the OOM killer ends them).
    machine = Machine(cores=16, gpus=0, available_bytes=int(5 * GB))
    n, line = auto_jobs(Needs(cores=1, peak_bytes=int(1.75 * GB)), machine, jobs=8)
    assert n == 2
    assert line.startswith("n_jobs=auto: 2 at once, bound by 5.0 GB available memory ÷ 1.75 GB per job (estimated)")
    assert "\n" not in line
    n, line = auto_jobs(Needs(cores=1, peak_bytes=int(9 * GB)), machine, jobs=8, mem_per_job_gb=9)
    assert n == 1 and "fewer than one job fits" in line and "given by hydra.launcher.mem_per_job_gb" in line


def test_the_sweep_says_what_auto_chose_and_why(tmp_path):
    target = tmp_path / "sweep"
    proc = sweep(target, "case=baseline", "seed=0,1", "trainer.max_epochs=1", "hydra.launcher.mem_per_job_gb=100000")
    text = console(target)
    assert proc.returncode == 0, text[-3000:]
    lines = [line for line in text.splitlines() if line.startswith("n_jobs=auto")]
    assert len(lines) == 1 and lines[0].startswith("n_jobs=auto: 1 at once, bound by ") and "available memory" in lines[0]


@pytest.mark.parametrize("accelerator", ["gpu", "mps"])
def test_hardware_not_there_is_one_line_and_exit_status_1(tmp_path, accelerator):
    # Bug this catches: Lightning's 30-line "No supported gpu backend found!" traceback.
    if accelerator == "gpu" and torch.cuda.is_available() or accelerator == "mps" and torch.backends.mps.is_available():
        pytest.skip(f"this machine has {accelerator}")
    for multirun in ([], ["-m", "seed=0,1"]):
        where = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        result = subprocess.run([sys.executable, "-m", "src.train", *multirun, "experiment=smoke",
                                 f"trainer.accelerator={accelerator}", f"{where}={tmp_path / str(len(multirun))}"],
                                cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 1, result.stderr[-3000:]
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"error: trainer.accelerator={accelerator} asks for"), lines
        assert "this machine has" in lines[0] and lines[0].endswith("run with trainer.accelerator=cpu"), lines
    assert not list((tmp_path / "2").glob("*/metrics.json"))  # the sweep started no job


def test_hardware_check_names_what_was_asked_and_what_runs():
    def cfg(**trainer):
        return OmegaConf.create({"trainer": {"accelerator": "auto", "devices": 1, **trainer}})

    one_gpu, no_gpu = Machine(cores=8, gpus=1, available_bytes=None), Machine(cores=2, gpus=0, available_bytes=None)
    with pytest.raises(ConfigError, match=r"^trainer.accelerator=gpu asks for a CUDA GPU, and this machine has 2 CPU "
                                          r"cores, no CUDA GPU: run with trainer.accelerator=cpu$"):
        check_hardware(cfg(accelerator="gpu"), no_gpu)
    with pytest.raises(ConfigError, match=r"^trainer.devices=4 asks for 4 GPUs, and this machine has 8 CPU cores, "
                                          r"1 CUDA GPU: run with trainer.devices=1$"):
        check_hardware(cfg(accelerator="gpu", devices=4), one_gpu)
    with pytest.raises(ConfigError, match="mps asks for Apple's MPS GPU.*run with trainer.accelerator=gpu$"):
        check_hardware(cfg(accelerator="mps"), one_gpu)
    check_hardware(cfg(accelerator="gpu", devices=1), one_gpu)
    check_hardware(cfg(accelerator="cpu", devices=4), no_gpu)
    check_hardware(cfg(accelerator="auto", devices=1), no_gpu)


def test_tune_n_jobs_auto_takes_the_same_rule_shared_with_the_jobs_beside_it(monkeypatch):
    # Bug this catches: tune.n_jobs=auto under -m starting cores² processes (every arm's study taking all cores).
    from helpers import compose_cfg
    from src.run import resources
    from src.tuning.tuner import check_tune, n_workers

    cfg = compose_cfg(["experiment=tune_digits", "tune.n_jobs=auto", "tune.n_trials=20", "tune.dir=x", "arm=baseline"])
    check_tune(cfg)  # auto is accepted
    monkeypatch.setattr(resources, "this_machine", lambda: Machine(cores=8, gpus=0, available_bytes=int(100 * GB)))
    monkeypatch.delenv("HAL_JOBS_SIDE_BY_SIDE", raising=False)
    assert n_workers(cfg) == 8
    monkeypatch.setenv("HAL_JOBS_SIDE_BY_SIDE", "3")  # the local launcher runs three studies at once
    assert n_workers(cfg) == 2
    monkeypatch.setattr(resources, "this_machine", lambda: Machine(cores=8, gpus=0, available_bytes=int(2 * GB)))
    monkeypatch.delenv("HAL_JOBS_SIDE_BY_SIDE")
    assert n_workers(cfg) == 2  # 2 GB ÷ about 0.94 GB per digits run
