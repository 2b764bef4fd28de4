"""A sweep SIGKILLed at random moments, rerun until it finishes, ends with the results of a sweep never killed."""
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from src.run.provenance import NOT_RESULTS

ROOT = Path(__file__).resolve().parents[1]


def sweep(sweep_dir: Path) -> subprocess.Popen:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    log = open(sweep_dir.parent / f"{sweep_dir.name}.log", "a")  # a file, not a pipe: a full pipe blocks
    return subprocess.Popen([sys.executable, "-m", "src.train", "-m", "experiment=smoke", "case=case1,case2",
                             "seed=0,1", "trainer.max_epochs=3", "trainer.accelerator=cpu", "threads=1",
                             # basic: one process, so kills 2-7 s in land in training; the local launcher's
                             # workers start after it (tests/run/test_local_launcher.py kills that one).
                             f"hydra.sweep.dir={sweep_dir}", "hydra/launcher=basic"], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, text=True)


def records(sweep_dir: Path) -> dict:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")}


@pytest.mark.slow
def test_a_sweep_killed_at_random_moments_ends_as_one_never_killed(tmp_path):
    start = time.monotonic()
    reference = sweep(tmp_path / "reference")
    assert reference.wait(timeout=600) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    whole = time.monotonic() - start  # the sweep never killed: the kills' window scales with this machine's speed
    expected = records(tmp_path / "reference")
    assert len(expected) == 4 and all(r["status"] == "finished" for r in expected.values())

    rng, killed, target = random.Random(0), 0, tmp_path / "killed"
    for attempt in range(30):
        proc = sweep(target)
        try:
            # In the time of the sweep never killed (about 14 s here, of which each attempt's start-up, Hydra and the
            # imports, takes ~5.5 s; a job trains ~2.5 s): the first three attempts within its first 35 % (kills in
            # start-up and the first epochs), then between 20 % and 90 % (kills in training; the jobs progress: a
            # window that ended at 7 s left ~1.5 s to train, and the sweep never finished).
            low, high = (0.1, 0.35) if attempt < 3 else (0.2, 0.9)
            code = proc.wait(timeout=rng.uniform(low, high) * whole)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            killed += 1
            continue
        assert code == 0, (tmp_path / "killed.log").read_text()[-3000:]
        break
    else:
        pytest.fail("the sweep never finished")
    assert killed >= 3, "too few kills to test anything: widen the window"

    got = records(target)
    assert sorted(got) == sorted(expected)
    drop = lambda r: {k: v for k, v in r.items() if k not in NOT_RESULTS}
    for job, record in got.items():
        assert drop(record) == drop(expected[job]), job
    assert not list(target.rglob("*.tmp"))
