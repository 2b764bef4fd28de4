"""SLURM without a cluster: the launcher's defaults, the run-dir lock, job dir names, messages.
The events on a real cluster are in tests/test_slurm.py (`make test-slurm`)."""
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from omegaconf import OmegaConf

from src import _slurm_tasks
from src.run.lock import LOCK, RunLocked, _start_time, describe, me, run_lock
from src.report.runs import group_runs, load_runs
from src.run.signals import stopped_line
from src.run.slurm import Job, resume_command, summary

sys.path.insert(0, str(Path(__file__).parent))
from test_sweep import compose_with_hydra  # noqa: E402


def launcher_of(*overrides):
    return OmegaConf.to_container(compose_with_hydra(["hydra/launcher=slurm", *overrides]).hydra.launcher, resolve=True)


def test_the_default_asks_for_no_gpu_unless_the_run_trains_on_one():
    cpu = launcher_of("trainer.accelerator=cpu")
    assert cpu["_target_"] == "hydra_plugins.hal_slurm_launcher.launcher.HALSlurmLauncher"
    assert (cpu["gpus_per_node"], cpu["tasks_per_node"], cpu["nodes"]) == (None, 1, 1)
    assert cpu["max_num_timeout"] > 0 and cpu["signal_delay_s"] < 60 * cpu["timeout_min"]
    gpu = launcher_of("trainer.accelerator=gpu", "trainer.devices=2", "trainer.num_nodes=3")
    assert (gpu["gpus_per_node"], gpu["tasks_per_node"], gpu["nodes"]) == (2, 2, 3)
    variant = OmegaConf.to_container(compose_with_hydra(["hydra/launcher=slurm_gpu", "trainer.accelerator=cpu",
                                                         "trainer.devices=4"]).hydra.launcher, resolve=True)
    assert (variant["gpus_per_node"], variant["tasks_per_node"]) == (4, 4)


@pytest.mark.parametrize("devices, tasks", [(1, 1), (4, 4), ("2", 2), ("auto", 1), ([0, 1, 2], 3), ("0,1", 2)])
def test_one_slurm_task_per_device(devices, tasks):
    assert _slurm_tasks(devices) == tasks


def test_devices_nodes_and_strategy_are_in_the_job_dir_name():
    cfg = compose_with_hydra(["case=case1", "trainer.devices=2", "trainer.num_nodes=1", "trainer.strategy=ddp"])
    assert cfg.hydra.job.override_dirname == "case=case1,trainer.devices=2,trainer.num_nodes=1,trainer.strategy=ddp"


def fake_run(root: Path, name: str, devices, exclude_keys) -> None:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"status": "finished", "dataset": "digits", "depth": 10,
                                                  "case": "case1", "seed": 0, "test_error": 10.0}))
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "trainer": {"devices": devices}}))
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"job": {"config": {"override_dirname": {"exclude_keys": exclude_keys}}}}}))


def test_the_report_groups_by_devices_also_for_runs_that_left_them_out_of_the_dir_name(tmp_path):
    fake_run(tmp_path, "one", 1, ["experiment", "trainer.devices"])  # written before trainer.devices counted
    fake_run(tmp_path, "two", 2, ["experiment"])
    groups = group_runs(load_runs([tmp_path]))
    assert sorted(g.settings for g in groups) == ["trainer.devices=1", "trainer.devices=2"]


def test_a_second_writer_refuses_naming_the_holder_and_the_lock_goes_with_the_run(tmp_path):
    with run_lock(tmp_path):
        holder = json.loads((tmp_path / LOCK).read_text())
        assert (holder["pid"], holder["host"]) == (os.getpid(), socket.gethostname())
        with pytest.raises(RunLocked, match=f"is being written by \\(host {socket.gethostname()}, pid {os.getpid()}, "):
            with run_lock(tmp_path):
                pass
        assert json.loads((tmp_path / LOCK).read_text()) == holder  # the refusal left it alone
    assert not (tmp_path / LOCK).exists()


def test_a_stale_lock_is_taken_over(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK).write_text(json.dumps({**me(), "pid": dead.pid, "pid_start": "1"}))
    with run_lock(tmp_path):
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    assert f"pid {dead.pid} is gone" in caplog.text


def test_a_lock_of_a_zombie_is_taken_over(tmp_path, caplog):
    """A killed launcher's worker stays a zombie where PID 1 reaps no orphans (containers, CI): it writes nothing.
    Bug this catches: its /proc entry read as alive, the rerun refusing its own sweep's jobs as 'being written'."""
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            pass  # exited, not yet reaped: a zombie
        (tmp_path / LOCK).write_text(json.dumps({**me(), "pid": zombie.pid, "pid_start": None}))
        with run_lock(tmp_path):
            assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
        assert f"pid {zombie.pid} is gone" in caplog.text
    finally:
        zombie.wait()


def test_a_lock_whose_pid_now_belongs_to_another_process_is_taken_over(tmp_path, caplog):
    """A reused pid: alive, but started at another time than the holder the lock names."""
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder = {**me(), "pid": alive.pid, "pid_start": _start_time(alive.pid)}
        (tmp_path / LOCK).write_text(json.dumps(holder))
        with pytest.raises(RunLocked):  # the same pid and start time: the holder is alive
            with run_lock(tmp_path):
                pass
        (tmp_path / LOCK).write_text(json.dumps({**holder, "pid_start": str(int(holder["pid_start"]) - 1)}))
        with run_lock(tmp_path):
            assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
        assert f"pid {alive.pid} is another process now" in caplog.text
    finally:
        alive.kill()
        alive.wait()


def test_a_lock_of_this_slurm_job_in_an_earlier_attempt_is_taken_over(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    (tmp_path / LOCK).write_text(json.dumps({"slurm_job": "41", "host": "node7", "pid": 1, "since": "then"}))
    with run_lock(tmp_path):
        pass
    assert "it is this SLURM job 41, in an earlier attempt" in caplog.text


def fake_scontrol(tmp_path: Path, monkeypatch, restarts: int) -> None:
    script = tmp_path / "bin" / "scontrol"
    script.parent.mkdir()
    script.write_text(f"#!/bin/sh\necho 'JobId=41 JobName=x Requeue=1 Restarts={restarts} BatchFlag=1'\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "41")


@pytest.mark.parametrize("restarts, then", [(1, "SLURM requeues the job: it resumes by itself"),
                                            (0, "re-run the same command to resume")])
def test_the_stop_line_says_when_slurm_requeues_the_job(tmp_path, monkeypatch, restarts, then):
    fake_scontrol(tmp_path, monkeypatch, restarts)
    assert stopped_line(tmp_path, signal.SIGTERM) == f"stopped: {tmp_path}: SIGTERM; {then}"


def test_the_resume_command_reruns_one_job_in_its_sweep_dir():
    config = OmegaConf.create({"hydra": {"sweep": {"dir": "outputs/sweeps/x"}, "overrides": {
        "hydra": ["hydra/launcher=slurm", "hydra.mode=MULTIRUN", "hydra.launcher.mem_gb=4"]}}})
    command = resume_command(SimpleNamespace(config=config), Job(1, ["case=case1", "seed=0"], Path("x")))
    assert command.split(" -m src.train ")[1] == ("-m hydra/launcher=slurm hydra.launcher.mem_gb=4 "
                                                   "hydra.sweep.dir=outputs/sweeps/x case=case1 seed=0")


def test_the_summary_counts_every_outcome():
    jobs = [Job(i, [], Path(str(i)), outcome=o) for i, o in enumerate(["finished", "skipped", "failed", "cancelled",
                                                                        "cancelled", "locked"])]
    assert summary(jobs) == ("slurm: 6 jobs: 1 finished, 1 failed, 2 cancelled, 1 skipped (finished before), "
                             "1 not run (another run writes their dir); re-run the same command to resume the others")
    assert summary(jobs[:1]) == "slurm: 1 job: 1 finished, 0 failed, 0 cancelled, 0 skipped (finished before)"


def test_finished_and_locked_jobs_are_not_submitted_and_one_summary_line_says_so(tmp_path):
    """Nothing goes to sbatch (there is no cluster here): one job finished before, the other's dir is held."""
    (tmp_path / "case=case1,seed=0").mkdir()
    (tmp_path / "case=case1,seed=0" / "metrics.json").write_text(json.dumps({"status": "finished"}))
    (tmp_path / "case=case2,seed=0").mkdir()
    holder = me()  # this test's process: alive
    (tmp_path / "case=case2,seed=0" / LOCK).write_text(json.dumps(holder))
    done = subprocess.run([sys.executable, "-m", "src.train", "-m", "hydra/launcher=slurm", "case=case1,case2",
                           "seed=0", f"hydra.sweep.dir={tmp_path}"], cwd=Path(__file__).parents[1],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-3:] == [
        f"not submitted: {tmp_path}/case=case2,seed=0: being written by {describe(holder)}",
        "skipping 1 of 2 jobs: already finished (delete a job's metrics.json to run it again)",
        "slurm: 2 jobs: 0 finished, 0 failed, 0 cancelled, 1 skipped (finished before), 1 not run (another run "
        "writes their dir); re-run the same command to resume the others"]
    assert not (tmp_path / ".submitit").exists()
    # One summary line: the launcher's (it knows the SLURM states), not also the local sweep's (SweepSummary).
    assert not [line for line in (done.stdout + done.stderr).splitlines() if line.startswith(("sweep ", "slurm: "))][1:]


@pytest.mark.parametrize("value", ["/t/case=case1,seed=0", "/x'y", "/a\\b", "/a\\", "/x\\'y"])
def test_a_ddp_rank_gets_its_multirun_job_dir_whole(value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from src.run.launch import quoted

    assert OverridesParser.create().parse_override(f"hydra.run.dir={quoted(value)}").value() == value
