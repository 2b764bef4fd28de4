"""Several workers on one study (``tune.n_jobs``): processes that share its storage, each trial run once."""
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from src.run.records import read_record

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_workers_share_one_study_and_run_each_trial_once(tmp_path):
    command = [sys.executable, "-m", "src.tune", "experiment=tune_digits", "arm=baseline", "tune.n_jobs=2",
               "tune.n_trials=4", "trainer.max_epochs=4", "tune.pruner=null", f"tune.dir={tmp_path}",
               "trainer.accelerator=cpu"]
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"}, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="baseline", storage=f"sqlite:///{tmp_path / 'baseline' / 'study.db'}")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    for t in study.trials:  # each trial trained once, from scratch: no worker resumed another's run
        record = read_record(tmp_path / "baseline" / f"trial_{t.number}")
        assert record["status"] == "validated" and record["resumed_at_epoch"] is None
        assert record["val_error"] == pytest.approx(t.value)
    pids = {t.user_attrs["worker"]["pid"] for t in study.trials}
    assert 1 <= len(pids) <= 2
    assert (tmp_path / "logs" / "baseline" / "worker_1" / "tune.log").exists()  # the second worker ran
