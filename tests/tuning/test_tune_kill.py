"""Done-when of the tuner (issue 26): a tune_digits study of two arms × 6 trials, SIGKILLed twice at random
moments and resumed by the same command, ends with every trial exactly once (complete or pruned); finished
trials are not retrained; the confirmation then writes the table with verdicts and a tuned column."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from src.run.records import read_record

ROOT = Path(__file__).resolve().parents[2]
ARMS = ("baseline", "hal_case1")
N_TRIALS = 6


def done_trials(tune_dir: Path) -> dict[Path, int]:
    """metrics.json's mtime of every trial whose run is over (validated or pruned)."""
    return {p: p.stat().st_mtime_ns for p in tune_dir.glob("*/trial_*/metrics.json")
            if read_record(p.parent).get("status") in ("validated", "pruned")}


@pytest.mark.slow
def test_a_study_killed_twice_ends_with_every_trial_once_and_confirms(tmp_path):
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    command = [sys.executable, "-m", "src.tune", "-m", "experiment=tune_digits", f"tune.dir={tmp_path}",
               "trainer.accelerator=cpu"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    over = {}
    # Kill once some trial of the first half has started, once some of the second half (12 in all), a random
    # 0-3 s into it but before two more trials have started: moments that always fall inside the study, on a fast
    # machine or a slow one (an idle machine trains a trial in about a second: a fixed 0-3 s could outlast the study).
    for at in (rng.randint(1, 5), rng.randint(7, 9)):
        with open(tmp_path / "tuner.log", "a") as log:
            tuner = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + 600
        while len(list(tmp_path.glob("*/trial_*"))) < at and tuner.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        delay_end = time.time() + rng.uniform(0, 3)
        while time.time() < delay_end and len(list(tmp_path.glob("*/trial_*"))) < at + 2 and tuner.poll() is None:
            time.sleep(0.05)
        assert tuner.poll() is None, f"the study ended before the kill at trial {at} (random seed {seed})"
        over = done_trials(tmp_path)
        os.killpg(tuner.pid, signal.SIGKILL)
        tuner.wait()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    for arm in ARMS:
        study = optuna.load_study(study_name=arm, storage=f"sqlite:///{tmp_path / arm / 'study.db'}")
        assert [t.number for t in study.trials] == list(range(N_TRIALS)), f"random seed {seed}"
        assert {t.state for t in study.trials} <= {TrialState.COMPLETE, TrialState.PRUNED}, f"random seed {seed}"
        assert sorted(p.name for p in (tmp_path / arm).glob("trial_*")) == [f"trial_{n}" for n in range(N_TRIALS)]
        for t in study.trials:
            record = read_record(tmp_path / arm / f"trial_{t.number}")
            if t.state == TrialState.COMPLETE:
                assert record["status"] == "validated" and record["val_error"] == pytest.approx(t.value)
            else:
                assert record["status"] == "pruned"
            assert "test_error" not in record
    # What had finished before the last kill was told, never trained again.
    assert {p: done_trials(tmp_path)[p] for p in over} == over

    confirm = subprocess.run([*command[:3], *command[4:], "tune.confirm=true"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=900)
    assert confirm.returncode == 0, confirm.stderr[-3000:]
    lines = (tmp_path / "confirm" / "table.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))  # the first table, under its heading
    table = lines[start:]
    assert table[0].endswith(" tuned |")
    rows = {line.split(" | ")[2]: line for line in table[2:4]}
    assert set(rows) == {"baseline", "case1"}
    assert any(verdict in rows["case1"] for verdict in (" better ", " worse ", " no evidence "))
    for arm, line in zip(ARMS, (rows["baseline"], rows["case1"])):
        study = optuna.load_study(study_name=arm, storage=f"sqlite:///{tmp_path / arm / 'study.db'}")
        assert f"{N_TRIALS} trials × 5 epochs" in line and f"best val {study.best_value:.2f} %" in line
        assert "(n=5)" in line
        assert (tmp_path / "confirm" / f"{arm}_history.png").stat().st_size > 0
    assert len(list((tmp_path / "confirm").glob("arm=*,seed=*/metrics.json"))) == 2 * 5
