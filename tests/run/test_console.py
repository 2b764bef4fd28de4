"""The console of a run: quiet, one line per epoch off a terminal, a summary line; train.log holds the same."""
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from src.run.console import python_command
from src.run.epoch_lines import EpochLines
from src.run.summary import summary_line, sweep_summary

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args, cwd=ROOT, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "src.train", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, **kwargs)


@pytest.mark.slow  # a subprocess: its imports alone take 5-15 s on the 2-core machine
def test_a_run_off_a_terminal_prints_epoch_lines_and_its_summary_and_nothing_else(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("trainer.max_epochs=3", "trainer.accelerator=cpu", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no srun hint, no Tip, no deprecation, no logging-interval warning
    lines = proc.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:3]] == [["epoch", "1/3"], ["epoch", "2/3"], ["epoch", "3/3"]]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert lines[3:] == [summary_line(record, run_dir)]
    assert f"test error {record['test_error_oracle']:.2f} % (oracle" in lines[3]
    assert lines[3].endswith(f"finished in {record['duration_s']} s; 1 thread") and record["threads"] == 1
    # train.log: the same lines, each after its time, logger and level.
    logged = [re.sub(r"^\[[^]]*\]\[[^]]*\]\[[A-Z]+\] - ", "", line) for line in (run_dir / "train.log").read_text().splitlines()]
    assert logged == lines


def test_epoch_lines_reach_the_console_about_five_times(caplog):
    class Trainer:
        is_global_zero, callback_metrics, max_epochs = True, {"train/loss": 0.5}, 30

    lines = EpochLines()
    with caplog.at_level(logging.DEBUG, logger="src.progress"):
        for epoch in range(30):
            Trainer.current_epoch = epoch
            lines.on_train_epoch_start(Trainer, None)
            lines.on_train_epoch_end(Trainer, None)
        lines.on_train_end(Trainer, None)
    assert len(caplog.records) == 30  # every epoch in train.log
    console = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert console == [f"epoch {e}/30  train/loss 0.5" for e in (6, 12, 18, 24, 30)]
    caplog.clear()
    beside_a_bar = EpochLines(console=False)  # on a terminal: the progress bar, and train.log's lines
    with caplog.at_level(logging.DEBUG, logger="src.progress"):
        for epoch in range(3):
            Trainer.current_epoch = epoch
            beside_a_bar.on_train_epoch_start(Trainer, None)
            beside_a_bar.on_train_epoch_end(Trainer, None)
        beside_a_bar.on_train_end(Trainer, None)
    assert [r.levelno for r in caplog.records] == [logging.DEBUG] * 3


def write_job(sweep, name, status):
    job = sweep / name
    job.mkdir(parents=True)
    (job / "metrics.json").write_text(json.dumps({"status": status}))
    return job


def test_the_sweep_summary_counts_jobs_by_status(tmp_path):
    sweep = tmp_path / "sweep"
    jobs = [write_job(sweep, f"seed={i}", s) for i, s in enumerate(
        ["finished", "finished", "finished", "failed", "interrupted", "running", "debug"])]
    line = sweep_summary(sweep, skipped=[jobs[0]])
    assert line == (f"sweep {sweep}: 2 finished, 1 failed, 1 skipped, 1 interrupted, 1 debug, 1 running; "
                    f"report: {python_command()} -m src.report {sweep}")
    # Only the jobs of this sweep, when the launcher knows them.
    assert sweep_summary(sweep, jobs[3:5]).startswith(f"sweep {sweep}: 0 finished, 1 failed, 0 skipped, 1 interrupted;")


@pytest.mark.slow  # two subprocesses
def test_a_local_sweep_ends_with_its_summary_and_a_rerun_counts_skipped_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "case=baseline,case1", "trainer.max_epochs=1", "trainer.enable_checkpointing=false",
            "trainer.accelerator=cpu", f"hydra.sweep.dir={sweep}", "hydra/launcher=basic"]
    first, second = run_cli(*args), run_cli(*args[:1], "case=baseline,case1,case2", *args[2:])
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    report = f"report: {python_command()} -m src.report {sweep}"
    assert first.stdout.splitlines()[-1] == f"sweep {sweep}: 2 finished, 0 failed, 0 skipped, 0 interrupted; {report}"
    assert second.stdout.splitlines()[-1] == f"sweep {sweep}: 1 finished, 0 failed, 2 skipped, 0 interrupted; {report}"


def test_python_command_is_the_running_interpreter():
    assert Path(python_command()).resolve() == Path(sys.executable).resolve()


@pytest.mark.slow  # subprocesses; the same through hydra_error in-process below
@pytest.mark.parametrize("args, line", [
    (["trainer.max_epoch=3"], "error: trainer.max_epoch: Key 'max_epoch' not in 'TrainerConfig' "
                              "(did you mean trainer.max_epochs?)"),
    (["-m", "case=case1,case2", "--cfg", "job"],
     "error: --cfg shows one job's config: drop -m (--multirun) and give each key one value"),
])
def test_composition_mistakes_are_one_line(args, line):
    proc = run_cli(*args)
    assert (proc.returncode, proc.stderr.strip().splitlines()) == (1, [line])


def test_a_key_added_with_a_typo_suggests_the_key(cfg_factory):
    from src.run.config import check_config
    from src.run.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^trainer\.max_epoch is not a key of trainer \(did you mean "
                                          r"trainer\.max_epochs\?; its keys: max_epochs, "):
        check_config(cfg_factory("+trainer.max_epoch=3"))


def test_hydra_errors_become_one_line_with_a_hint():
    from hydra.errors import HydraException

    from helpers import compose_cfg
    from src.run.launch import hydra_error

    with pytest.raises(HydraException) as error:
        compose_cfg(["trainer.max_epoch=3"])
    assert str(hydra_error(error.value)) == "trainer.max_epoch: Key 'max_epoch' not in 'TrainerConfig' " \
                                            "(did you mean trainer.max_epochs?)"
    multirun_cfg = ValueError("Only one of --run, --multirun, --cfg, --info and --shell_completion can be specified")
    assert str(hydra_error(multirun_cfg)).startswith("--cfg shows one job's config: drop -m")


@pytest.mark.slow  # a subprocess
def test_print_config_prints_the_composed_config_first(tmp_path):
    from omegaconf import OmegaConf

    run_dir = tmp_path / "run"
    proc = run_cli("print_config=true", "debug=fast", "trainer.accelerator=cpu", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    printed = OmegaConf.to_yaml(saved, resolve=True).rstrip().splitlines()
    assert proc.stdout.splitlines()[:len(printed)] == printed
    assert proc.stdout.splitlines()[-1].endswith("; 1 thread") and "debug in" in proc.stdout.splitlines()[-1]


@pytest.mark.slow  # a subprocess trained until its first checkpoint
def test_a_sweep_stopped_by_a_signal_still_prints_its_summary(tmp_path):
    import signal
    import time

    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "src.train", "-m", "case=case1,case2", "trainer.max_epochs=300",
                             "trainer.accelerator=cpu", f"hydra.sweep.dir={sweep}", "hydra/launcher=basic"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = sweep / "case=case1,trainer.max_epochs=300" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].endswith("SIGINT; re-run the same command to resume")
    assert out.splitlines()[-1] == (f"sweep {sweep}: 0 finished, 0 failed, 0 skipped, 1 interrupted; "
                                    f"report: {python_command()} -m src.report {sweep}")
