"""An arm's Optuna study, stored in its study dir, and the trials handed to the workers that share it.

Layout (``tune.dir``, one subdir per arm)::

    <tune.dir>/<arm>/study.db        Optuna's RDB storage on SQLite (tune.storage=sqlite), or
    <tune.dir>/<arm>/study.journal   its journal file storage (tune.storage=journal: shared file systems)
    <tune.dir>/<arm>/config.yaml     the arm's composed config: the confirmation trains its best values on it
    <tune.dir>/<arm>/trial_<n>/      trial n's run dir (a run of src.train: metrics.json, checkpoints, ...)

A worker takes its next trial under ``study.lock`` (an flock the kernel drops when the process dies): first a
RUNNING trial that no live process holds (its run dir's lock, ``src/run/lock.py``, is stale), which is *adopted*:
the same trial, same number, same values, and its run resumes from its checkpoint; else, while fewer than
``tune.n_trials`` trials exist, a new one (``study.ask``), its run dir locked before the study lock is released.
So a killed tuner loses no trial and repeats none, however many workers share the study.
"""
import contextlib
import fcntl
import logging
from pathlib import Path
from typing import Iterator, Optional

import optuna
from omegaconf import DictConfig
from optuna.trial import TrialState

from src.run.errors import ConfigError
from src.run.lock import RunLocked, run_lock

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)  # the tuner's own lines say what happens, once

STORAGE_FILES = {"sqlite": "study.db", "journal": "study.journal"}
PRUNERS = ("median", "successive_halving", None)
# The budget every arm of a comparison shares: a study made with another one is refused, not extended.
BUDGET_KEYS = ("n_trials", "epochs")


def trial_dir(study_dir: Path, number: int) -> Path:
    return Path(study_dir) / f"trial_{number}"


def storage_path(study_dir: Path, kind: str) -> Path:
    if kind not in STORAGE_FILES:
        raise ConfigError(f"tune.storage must be one of {', '.join(STORAGE_FILES)}, got {kind!r}")
    return Path(study_dir) / STORAGE_FILES[kind]


def storage(study_dir: Path, kind: str) -> optuna.storages.BaseStorage:
    path = storage_path(study_dir, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "journal":
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    # Workers wait for each other's writes rather than failing on "database is locked".
    return optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}", engine_kwargs={"connect_args": {"timeout": 120}})


def make_pruner(name: Optional[str], epochs: int) -> optuna.pruners.BasePruner:
    """median: prune a trial whose validation error is above the median of the earlier trials at the same epoch,
    after 3 trials and in the second half of the epochs only; successive_halving: Optuna's asynchronous
    successive halving from half the epochs on; null: none. Not earlier: under cosine annealing a large learning
    rate has a high validation error in the first epochs and often the lowest at the end (on digits, a trial at
    LR 1.46 pruned at epoch 1 would have been the best)."""
    if name not in PRUNERS:
        raise ConfigError(f"tune.pruner must be median, successive_halving or null, got {name!r}")
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=epochs // 2)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, epochs // 2))
    return optuna.pruners.NopPruner()


def open_study(study_dir: Path, arm: str, tune: DictConfig, epochs: int) -> optuna.Study:
    """The arm's study (created on first use) with the sampler and pruner of ``tune``. Its budget is stored with
    it: a later command with another ``tune.n_trials`` or ``trainer.max_epochs`` is refused."""
    # Under the study lock: workers started together (SLURM jobs, tune.n_jobs) would otherwise create the storage's
    # tables at the same moment, and all but one fail (sqlite3.IntegrityError on alembic_version).
    with study_lock(study_dir):
        store = storage(study_dir, tune.storage)
        existing = len(optuna.load_study(study_name=arm, storage=store).trials) if _exists(store, arm) else 0
        # A sampler seeded the same at every restart would propose the first trial's values again.
        sampler = optuna.samplers.TPESampler(seed=tune.seed + existing, n_startup_trials=tune.startup_trials)
        study = optuna.create_study(study_name=arm, storage=store, direction="minimize", sampler=sampler,
                                    pruner=make_pruner(tune.pruner, epochs), load_if_exists=True)
        budget = {"n_trials": int(tune.n_trials), "epochs": int(epochs)}
        stored = study.user_attrs.get("budget")
        if stored is None:
            study.set_user_attr("budget", budget)
    if stored is not None and stored != budget:
        raise ConfigError(f"the study in {study_dir} was made with n_trials={stored['n_trials']} and "
                          f"{stored['epochs']} epochs per trial, not {budget['n_trials']} and {budget['epochs']}: "
                          "every arm gets one budget (use another tune.dir for another budget)")
    return study


def _exists(store: optuna.storages.BaseStorage, name: str) -> bool:
    return any(s.study_name == name for s in store.get_all_studies())


@contextlib.contextmanager
def study_lock(study_dir: Path) -> Iterator[None]:
    Path(study_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(study_dir) / "study.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def counted(study: optuna.Study) -> int:
    """The trials that use up the budget: every one asked (running, complete, pruned or failed)."""
    return sum(t.state != TrialState.WAITING for t in study.get_trials(deepcopy=False))


def next_trial(study: optuna.Study, study_dir: Path, n_trials: int,
               stack: contextlib.ExitStack) -> Optional[optuna.Trial]:
    """The next trial for this worker, its run dir locked in ``stack``: an abandoned RUNNING trial first, else a
    new one while the budget allows; None when every trial is taken."""
    with study_lock(study_dir):
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            try:
                stack.enter_context(run_lock(trial_dir(study_dir, frozen.number)))
            except RunLocked:
                continue  # a live worker trains it
            log.info("trial %d of %s was interrupted: resuming it with the same values", frozen.number, study_dir)
            return optuna.Trial(study, frozen._trial_id)
        if counted(study) >= n_trials:
            return None
        trial = study.ask()
        stack.enter_context(run_lock(trial_dir(study_dir, trial.number)))
        return trial
