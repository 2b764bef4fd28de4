"""src.tune's study (src/tuning/): trials never read the test split, a killed trial is adopted with its values and
its run resumes, pruned trials are never finished results, the budget is one for every arm."""
import contextlib
import json

import optuna
import pytest
import pytorch_lightning as pl
from optuna.trial import TrialState

from helpers import compose_cfg
from src.data.datamodule import InMemoryDataModule
from src.run.errors import ConfigError
from src.run.records import read_record
from src.report.runs import load_runs
from src.train import train
from src.tuning import study as study_module
from src.tuning.confirm import with_column
from src.tuning.space import search_space, suggest, trial_config
from src.tuning.study import next_trial, open_study, trial_dir
from src.tuning.trial import Pruning, run_trial
from src.tuning.tuner import tune

TUNE = ["experiment=tune_digits", "arm=hal_case1", "trainer.accelerator=cpu", "trainer.max_epochs=2",
        "tune.n_trials=2", "tune.pruner=null"]


class SplitRead(AssertionError):
    pass


class Sealed:
    """A tensor of the test split that cannot be read: anything but moving it to a device raises."""

    def to(self, *args, **kwargs):
        return self

    def __getattr__(self, name):
        raise SplitRead(f"the test split was read ({name})")

    def __len__(self):
        raise SplitRead("the test split was read (len)")

    def __getitem__(self, index):
        raise SplitRead("the test split was read (index)")


@pytest.fixture
def sealed_test_split(monkeypatch):
    split = InMemoryDataModule._split

    def sealed(self, data):
        splits = split(self, data)
        splits["test"] = (Sealed(), Sealed(), Sealed())
        return splits

    monkeypatch.setattr(InMemoryDataModule, "_split", sealed)


def cfg_of(tmp_path, *overrides):
    return compose_cfg([*TUNE, f"tune.dir={tmp_path}", *overrides])


def test_no_trial_reads_the_test_split(tmp_path, sealed_test_split):
    # The seal holds: a run with its test pass reads the split and fails.
    (tmp_path / "tested").mkdir()
    with pytest.raises(SplitRead):
        train(compose_cfg(["trainer.max_epochs=1", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]),
              tmp_path / "tested")
    summary = tune(cfg_of(tmp_path / "tune", "trainer.max_epochs=1"), "hal_case1")
    assert summary["trials"] == {"complete": 2}
    for n in range(2):
        record = read_record(tmp_path / "tune" / "hal_case1" / f"trial_{n}")
        assert record["status"] == "validated" and "test_error" not in record
        assert record["val_error"] == pytest.approx(optuna.load_study(
            study_name="hal_case1", storage=f"sqlite:///{tmp_path}/tune/hal_case1/study.db").trials[n].value)


def test_a_killed_trial_is_adopted_with_its_values_and_its_run_resumes(tmp_path):
    cfg = cfg_of(tmp_path, "trainer.max_epochs=3", "tune.n_trials=1")
    study_dir = tmp_path / "hal_case1"
    study = open_study(study_dir, "hal_case1", cfg.tune, 3)
    space = search_space(cfg.tune, "hal")

    class Killed(BaseException):
        pass

    class KillAfterEpoch1(pl.Callback):  # like SIGKILL after the checkpoint of epoch 1: nothing is told or recorded
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 2:
                raise Killed

    with pytest.raises(Killed), contextlib.ExitStack() as stack:
        trial = next_trial(study, study_dir, 1, stack)
        values = suggest(trial, space)
        train(trial_config(cfg, values), trial_dir(study_dir, trial.number), callbacks=[Pruning(trial), KillAfterEpoch1()])
    assert read_record(trial_dir(study_dir, 0))["status"] == "running"
    assert [t.state for t in study.trials] == [TrialState.RUNNING]
    (trial_dir(study_dir, 0) / ".lock").write_text(json.dumps({"pid": 999999999, "host": __import__("socket")
                                                                .gethostname(), "pid_start": "1"}))  # a dead holder
    summary = tune(cfg, "hal_case1")
    assert summary["trials"] == {"complete": 1}  # the same trial, not a second one
    trial = optuna.load_study(study_name="hal_case1", storage=f"sqlite:///{study_dir}/study.db").trials[0]
    assert trial.params == values
    record = read_record(trial_dir(study_dir, 0))
    assert record["status"] == "validated" and record["resumed_at_epoch"] == 2
    assert sorted(trial.intermediate_values) == [0, 1, 2]  # each epoch reported once
    assert record["val_error"] == pytest.approx(trial.intermediate_values[2])
    before = (trial_dir(study_dir, 0) / "metrics.json").stat().st_mtime_ns
    assert tune(cfg, "hal_case1")["trials"] == {"complete": 1}  # done: nothing is retrained
    assert (trial_dir(study_dir, 0) / "metrics.json").stat().st_mtime_ns == before


def test_a_live_trial_is_left_to_its_worker(tmp_path):
    cfg = cfg_of(tmp_path, "tune.n_trials=2")
    study_dir = tmp_path / "hal_case1"
    study = open_study(study_dir, "hal_case1", cfg.tune, 2)
    with contextlib.ExitStack() as first, contextlib.ExitStack() as second:
        a = next_trial(study, study_dir, 2, first)
        b = next_trial(study, study_dir, 2, second)  # a is running in a live worker (this process holds its lock)
        assert (a.number, b.number) == (0, 1)
        assert next_trial(study, study_dir, 2, contextlib.ExitStack()) is None  # the budget is taken


def test_pruned_trials_are_recorded_as_pruned_never_finished(tmp_path, monkeypatch):
    # Prunes every trial at its first report (any error above 0 %).
    monkeypatch.setattr(study_module, "make_pruner", lambda name, epochs: optuna.pruners.ThresholdPruner(upper=0.0))
    cfg = cfg_of(tmp_path, "trainer.max_epochs=3", "tune.n_trials=1")
    study_dir = tmp_path / "hal_case1"
    study = open_study(study_dir, "hal_case1", cfg.tune, 3)
    with contextlib.ExitStack() as stack:
        trial = next_trial(study, study_dir, 1, stack)
        assert run_trial(study, trial, cfg, search_space(cfg.tune, "hal"), study_dir) == TrialState.PRUNED
    assert study.trials[0].state == TrialState.PRUNED
    record = read_record(trial_dir(study_dir, 0))
    assert record["status"] == "pruned" and record["pruned_at_epoch"] == 0
    assert [run.finished for run in load_runs([study_dir])] == [False]


def test_every_arm_gets_the_budget_the_study_was_made_with(tmp_path):
    cfg = cfg_of(tmp_path)
    open_study(tmp_path / "hal_case1", "hal_case1", cfg.tune, 2)
    with pytest.raises(ConfigError, match="n_trials=2 and 2 epochs per trial, not 3 and 2"):
        open_study(tmp_path / "hal_case1", "hal_case1", cfg_of(tmp_path, "tune.n_trials=3").tune, 2)


def _open_at_once(study_dir, tune, barrier, results):
    barrier.wait()
    try:
        open_study(study_dir, "hal_case1", tune, 2)
        results.put("ok")
    except Exception as e:  # noqa: BLE001 - the test reports whatever a worker met
        results.put(f"{type(e).__name__}: {e}"[:200])


def test_workers_started_together_create_one_study(tmp_path):
    """SLURM starts a study's workers at the same moment: each one's first open_study must find or create the
    storage, never fail on the tables another one is creating (sqlite3.IntegrityError on alembic_version)."""
    import multiprocessing
    context = multiprocessing.get_context("fork")
    tune = cfg_of(tmp_path).tune
    for attempt in range(3):
        study_dir = tmp_path / f"attempt{attempt}" / "hal_case1"
        barrier, results = context.Barrier(4), context.Queue()
        workers = [context.Process(target=_open_at_once, args=(study_dir, tune, barrier, results)) for _ in range(4)]
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join()
        assert outcomes == ["ok"] * 4, outcomes
        assert [s.study_name for s in optuna.get_all_study_summaries(study_module.storage(study_dir, "sqlite"))] == [
            "hal_case1"]


def test_search_space_per_method_and_its_errors(tmp_path):
    cfg = cfg_of(tmp_path, "arm=dks")
    assert set(search_space(cfg.tune, "dks")) == {"optimizer.lr", "optimizer.weight_decay", "method.weight"}
    assert set(search_space(cfg.tune, "hal")) == {"optimizer.lr", "optimizer.weight_decay"}
    trial = trial_config(cfg, {"method.weight": 0.5, "optimizer.lr": 0.1})
    assert (trial.method.weight, trial.optimizer.lr, trial.test, trial.test_curve) == (0.5, 0.1, False, False)
    with pytest.raises(ConfigError, match="method.wieght is not a key"):
        trial_config(cfg, {"method.wieght": 0.5})
    cfg.tune.space.common["optimizer.lr"].low = 30.0
    with pytest.raises(ConfigError, match="low must be below high"):
        search_space(cfg.tune, "hal")
    with pytest.raises(ConfigError, match="needs test=true"):
        from src.run.config import check_config
        check_config(compose_cfg(["test=false", "test_curve=true"]))


def test_with_column_appends_one_cell_per_row():
    md = "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n\nnotes"
    assert with_column(md, "tuned", ["x", "y|z"]) == \
        "| a | b | tuned |\n|---|---|---|\n| 1 | 2 | x |\n| 3 | 4 | y/z |\n\nnotes"


def test_the_confirmation_refuses_an_unfinished_study(tmp_path):
    from src.tuning.confirm import confirm

    cfg = cfg_of(tmp_path)
    with pytest.raises(ConfigError, match="no study in"):
        confirm(cfg.tune)
    study = open_study(tmp_path / "hal_case1", "hal_case1", cfg.tune, 2)
    with contextlib.ExitStack() as stack:
        next_trial(study, tmp_path / "hal_case1", 2, stack)
    with pytest.raises(ConfigError, match="hal_case1 has 1 of 2 trials, 1 unfinished: run its tuning command again"):
        confirm(cfg.tune)


@pytest.mark.slow  # a subprocess: 10 s idle, a minute on a loaded machine
def test_the_cli_without_an_arm_is_one_error_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    result = subprocess.run([sys.executable, "-m", "src.tune", "experiment=tune_digits", f"tune.dir={tmp_path}"],
                            cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == \
        "error: choose the arm to tune: arm=<conf/arm option>, or -m for every arm of the preset"


def test_the_confirmation_trains_each_best_trial_and_adds_the_tuned_column(tmp_path, caplog):
    import logging

    from omegaconf import OmegaConf

    from src.tuning.confirm import confirm

    lr = optuna.distributions.FloatDistribution(0.01, 2.0, log=True)
    best = {"baseline": 0.5, "hal_case1": 1.9}  # 1.9: at 99 % of the range on its log scale, at the edge
    for arm in best:  # two finished studies of two trials each, made without training
        cfg = cfg_of(tmp_path, f"arm={arm}", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                     "tune.confirm_seeds=[100,101]")
        study = open_study(tmp_path / arm, arm, cfg.tune, 1)
        for value, error in ((best[arm], 10.0), (1.5, 20.0)):
            study.add_trial(optuna.trial.create_trial(params={"optimizer.lr": value}, distributions={"optimizer.lr": lr},
                                                      value=error))
        (tmp_path / arm / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    command = f"python -m src.tune experiment=tune_digits tune.dir={tmp_path} tune.confirm=true"
    with caplog.at_level(logging.WARNING, logger="src.tuning.confirm"):
        result = confirm(cfg.tune, command)
    assert f"command <code>{command}</code>;" in (tmp_path / "confirm" / "report.html").read_text()
    assert [m for m in caplog.messages if "edge" in m] == [
        "hal_case1: the best optimizer.lr=1.9 lies at the top edge of its range 0.01-2 (log): the optimum may lie "
        "outside it; widen its range in tune.space and tune again"]
    runs = sorted(p.name for p in (tmp_path / "confirm").glob("arm=*"))
    assert runs == ["arm=baseline,seed=100", "arm=baseline,seed=101", "arm=hal_case1,seed=100", "arm=hal_case1,seed=101"]
    for run in runs:
        arm, seed = run[4:].split(",seed=")
        record = read_record(tmp_path / "confirm" / run)
        assert record["status"] == "finished" and record["seed"] == int(seed) and "test_error" in record
        assert OmegaConf.load(tmp_path / "confirm" / run / "tuned.yaml") == {"arm": arm, "trial": 0,
                                                                              "optimizer.lr": best[arm]}
    lines = [line for line in result["markdown"].splitlines() if line.startswith("|")]
    assert lines[0].endswith(" tuned |") and (tmp_path / "confirm" / "table.md").read_text() == result["markdown"]
    rows = {line.split(" | ")[2]: line for line in lines[2:4]}
    assert rows["baseline"].endswith("| 2 trials × 1 epoch (2 complete); best val 10.00 %: optimizer.lr=0.5 |")
    assert rows["case1"].endswith("| 2 trials × 1 epoch (2 complete); best val 10.00 %: "
                                  "optimizer.lr=1.9 (at the edge: top of 0.01-2) |")
    assert any(verdict in rows["case1"] for verdict in (" better ", " worse ", " no evidence "))
    assert sorted(p.name for p in result["figures"]) == ["baseline_history.png", "baseline_importances.png",
                                                         "hal_case1_history.png", "hal_case1_importances.png"]
