"""The README's "When things go wrong" table, row by row, through `python -m src.train` as a user runs it:
what is printed, what is on disk, and what re-running does."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", "threads=1"]


def cli(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "src.train", *QUICK, *overrides, f"hydra.run.dir={run_dir}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def last_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def epochs(run_dir: Path) -> list[int]:
    with open(run_dir / "history.csv") as f:
        return [int(float(row["epoch"])) for row in csv.DictReader(f)]


def warnings_of(proc: subprocess.CompletedProcess) -> list[str]:
    """stderr holds warnings and errors only (INFO goes to stdout): every line of it."""
    return [line for line in proc.stderr.splitlines() if line.strip()]


def test_max_epochs_0_is_one_line_a_failed_record_and_a_fixed_rerun_finishes(tmp_path):
    run_dir = tmp_path / "run"
    proc = cli(run_dir, "trainer.max_epochs=0")
    assert proc.returncode == 1
    assert last_line(proc) == "error: trainer.max_epochs must be an integer >= 1, got 0"
    assert record(run_dir)["status"] == "failed" and "test_error" not in record(run_dir)
    fixed = cli(run_dir)  # "fix the value": the same dir, trainer.max_epochs=1
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert record(run_dir)["status"] == "finished" and epochs(run_dir) == [1]


def test_divergence_is_one_line_and_a_failed_record_without_test_metrics(tmp_path):
    run_dir = tmp_path / "run"
    proc = cli(run_dir, "optimizer.lr=1e6", "trainer.gradient_clip_val=null")
    assert proc.returncode == 1
    assert last_line(proc).startswith("error: training loss became non-finite in epoch 0; lower optimizer.lr")
    on_disk = record(run_dir)
    assert on_disk["status"] == "failed" and on_disk["error"].startswith(
        "DivergenceError: training loss became non-finite in epoch 0")
    assert not any(key.startswith("test_") for key in on_disk)


def test_a_damaged_checkpoint_is_one_warning_moved_aside_and_the_run_starts_over(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 half a zip")
    proc = cli(run_dir, "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    [warning] = warnings_of(proc)
    assert f"{run_dir / 'checkpoints' / 'last.ckpt'} is damaged (" in warning
    assert warning.endswith("moved it to last.ckpt.corrupt and starting over")
    assert (run_dir / "checkpoints" / "last.ckpt.corrupt").read_bytes() == b"PK\x03\x04 half a zip"
    assert epochs(run_dir) == [1, 2] and record(run_dir)["status"] == "finished"  # from epoch 1, each once
    assert "resumed_at_epoch" not in record(run_dir) or record(run_dir)["resumed_at_epoch"] in (None, 0)


def test_a_corrupt_record_is_one_warning_moved_aside_and_the_job_runs_again(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text('{"status": "finished", "test_err')  # half written by another tool
    proc = cli(run_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [warning] = warnings_of(proc)
    assert f"{run_dir / 'metrics.json'} is damaged (" in warning
    assert warning.endswith("moved it to metrics.json.corrupt and starting over")
    assert (run_dir / "metrics.json.corrupt").read_text() == '{"status": "finished", "test_err'
    assert record(run_dir)["status"] == "finished" and "test_error" in record(run_dir)


def test_a_type_error_is_one_line_naming_the_key_and_nothing_is_written(tmp_path):
    run_dir = tmp_path / "run"
    proc = cli(run_dir, "seed=abc")
    assert proc.returncode == 1
    assert last_line(proc) == "error: seed: Value 'abc' of type 'str' could not be converted to Integer"
    assert len(proc.stderr.strip().splitlines()) == 1 and not run_dir.exists()


def test_a_binary_superclass_file_is_one_line_and_a_failed_record(tmp_path):
    run_dir = tmp_path / "run"
    binary = tmp_path / "random.bin"
    binary.write_bytes(np.random.default_rng(0).bytes(4096))
    proc = cli(run_dir, "case=custom", f"case.file={binary}")
    assert proc.returncode == 1
    assert last_line(proc).startswith(f"error: superclass file {binary} is not a text (UTF-8) file: ")
    assert record(run_dir)["status"] == "failed"


def test_a_run_dir_that_cannot_be_created_is_one_line_and_nothing_is_written(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("a regular file: no dir can be made under it")
    proc = cli(afile / "sub")
    assert proc.returncode == 1
    assert last_line(proc) == f"error: cannot write the run dir (hydra.run.dir / hydra.sweep.dir): Not a directory: " \
        f"{afile / 'sub'}"
    assert afile.read_text() == "a regular file: no dir can be made under it" and sorted(tmp_path.iterdir()) == [afile]


def test_a_damaged_hierarchy_file_is_one_line_and_left_as_it_is(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "hierarchy.npz").write_bytes(b"PK\x03\x04 not an archive")
    proc = subprocess.run([sys.executable, "-m", "src.discover", str(run_dir), "--k", "2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert last_line(proc).startswith(f"error: {run_dir / 'hierarchy.npz'} is damaged (")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (run_dir / "hierarchy.npz").read_bytes() == b"PK\x03\x04 not an archive"  # unchanged


def test_sigkill_leaves_running_and_a_checkpoint_and_a_rerun_resumes(tmp_path):
    import signal
    import time

    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "src.train", "trainer.max_epochs=6", "trainer.enable_progress_bar=false", "threads=1",
           f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before its first checkpoint"
    proc.send_signal(signal.SIGKILL)  # nothing runs after this: no handler, no record update
    proc.wait(timeout=60)
    assert record(run_dir)["status"] == "running" and ckpt.exists()
    rerun = cli(run_dir, "trainer.max_epochs=6")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert record(run_dir)["status"] == "finished" and record(run_dir)["resumed_at_epoch"] >= 1
    assert epochs(run_dir) == list(range(1, 7))  # each epoch once, counted from 1
