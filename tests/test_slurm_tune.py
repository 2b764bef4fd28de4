"""One Optuna study whose trials run as SLURM jobs (`make test-slurm`; tests/slurm/cluster.sh): two workers of
the hal_case1 study, each a job of a SLURM array (`tune.worker=0,1 hydra/launcher=slurm`), share its SQLite
storage; every trial runs once, inside one of those jobs."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from src.run.records import read_record

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "tests" / "slurm" / "cluster.sh"
N_TRIALS = 4


@pytest.fixture(scope="module")
def slurm_cluster():
    """A cluster already up here is used as it is; otherwise one is started, and stopped at the end."""
    if shutil.which("sinfo") and subprocess.run(["sinfo"], capture_output=True).returncode == 0:
        yield
        return
    subprocess.run([str(CLUSTER), "start"], check=True, timeout=900)
    yield
    subprocess.run(["scancel", "--user", os.environ.get("USER", "root")], check=False)
    subprocess.run([str(CLUSTER), "stop"], check=True)


def test_one_study_whose_trials_run_as_slurm_jobs(slurm_cluster, tmp_path):
    command = [sys.executable, "-m", "src.tune", "-m", "experiment=tune_digits", "arm=hal_case1",
               "tune.worker=0,1", f"tune.n_trials={N_TRIALS}", "trainer.max_epochs=3", f"tune.dir={tmp_path}",
               "trainer.accelerator=cpu", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1",
               "hydra.launcher.mem_gb=2"]
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    study = optuna.load_study(study_name="hal_case1", storage=f"sqlite:///{tmp_path / 'hal_case1' / 'study.db'}")
    assert [t.number for t in study.trials] == list(range(N_TRIALS))
    assert {t.state for t in study.trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    jobs = {t.user_attrs["worker"]["slurm_job"] for t in study.trials}
    assert None not in jobs  # every trial ran inside a SLURM job
    assert all(read_record(tmp_path / "hal_case1" / f"trial_{t.number}")["status"] in ("validated", "pruned")
               for t in study.trials)
