"""``tune(cfg, arm)``: one worker of an arm's study. It takes trials (``study.next_trial``) until the budget
is used up, and with ``tune.n_jobs`` > 1 starts that many workers in all on the same study (processes, not
threads: each trains with its own torch threads). Workers started by a launcher (``tune.worker=0,1,2`` under
``hydra/launcher=slurm``) share the study the same way.
"""
import contextlib
import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import MISSING, DictConfig, OmegaConf

from src.run.errors import ConfigError
from src.run.launch import config_flags
from src.run.records import write_atomic
from src.run.resources import auto_workers
from src.tuning.space import edge_warnings, search_space
from src.tuning.study import next_trial, open_study
from src.tuning.trial import run_trial

log = logging.getLogger(__name__)

CONFIG = "config.yaml"


def check_tune(cfg: DictConfig) -> DictConfig:
    """``cfg.tune``, or one error line: tuning needs a tune preset and a validation split."""
    if cfg.get("tune") is None:
        raise ConfigError("no tune settings: choose a tune preset (experiment=tune_digits, tune_mnist, tune_cifar10)")
    tune = cfg.tune
    if not (isinstance(tune.n_trials, int) and tune.n_trials >= 1):
        raise ConfigError(f"tune.n_trials must be an integer >= 1, got {tune.n_trials!r}")
    if not (isinstance(tune.n_jobs, int) and tune.n_jobs >= 1 or tune.n_jobs == "auto"):
        raise ConfigError(f"tune.n_jobs must be auto or an integer >= 1, got {tune.n_jobs!r}")
    if not cfg.dataset.val_size:
        raise ConfigError("tuning minimises the validation error: set dataset.val_size > 0 (the test split is "
                          "never used for it)")
    return tune


def tune(cfg: DictConfig, arm: str) -> dict:
    """Run this worker (and ``tune.n_jobs - 1`` more) on the arm's study until every trial is taken; returns
    the counts of its trials by state and its best trial."""
    tune = check_tune(cfg)
    study_dir = Path(tune.dir) / arm
    study = open_study(study_dir, arm, tune, cfg.trainer.max_epochs)
    space = search_space(tune, cfg.method.name)
    missing = [key for key in space if OmegaConf.select(cfg, key, default=MISSING) is MISSING]
    if missing:  # before any trial: a typo in tune.space must not tune nothing
        raise ConfigError(f"tune.space: {missing[0]} is not a key of the config of arm {arm}")
    base = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    base.pop("hydra", None)
    path = study_dir / CONFIG
    if not path.exists():
        write_atomic(path, lambda f: f.write(OmegaConf.to_yaml(base)))  # a kill leaves all of it or none
    helpers = [subprocess.Popen(worker_command(i)) for i in range(1, n_workers(cfg))]
    try:
        while True:
            with contextlib.ExitStack() as stack:
                trial = next_trial(study, study_dir, tune.n_trials, stack)
                if trial is None:
                    break
                run_trial(study, trial, base, space, study_dir)
    finally:
        for helper in helpers:
            helper.wait()
    states = Counter(t.state.name.lower() for t in study.trials)
    # "finished": this worker's part is done (the SLURM launcher counts a job finished only so).
    summary = {"arm": arm, "study": str(study_dir), "trials": dict(states), "status": "finished"}
    try:
        summary.update(best_value=study.best_value, best_params=study.best_params)
    except ValueError:  # no complete trial
        pass
    else:
        summary["at_edge"] = edge_warnings(arm, study.best_trial)
        for line in summary["at_edge"]:
            log.warning(line)
    if any(helper.returncode for helper in helpers):
        raise ConfigError(f"{sum(bool(h.returncode) for h in helpers)} of the study's workers failed: see their "
                          "lines above")
    return summary


def n_workers(cfg: DictConfig) -> int:
    """``tune.n_jobs``; ``auto``: the local launcher's rule (src/run/resources.py), with its line."""
    if cfg.tune.n_jobs != "auto":
        return cfg.tune.n_jobs
    n, line = auto_workers(cfg, cfg.tune.n_trials)
    log.info("tune.%s", line)
    return n


def worker_command(index: int) -> list[str]:
    """This command again as one more worker: the same overrides, ``tune.n_jobs=1``, and ``tune.worker``, which
    gives it its own log dir (``<tune.dir>/logs/<arm>/worker_<i>``)."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("tune.n_jobs=", "tune.worker="))]
    return [sys.executable, "-m", "src.tune", *config_flags(), *overrides, "tune.n_jobs=1", f"tune.worker={index}"]
