"""One trial: the arm's config with the trial's values, trained by ``src.train.train`` in ``trial_<n>/`` with
``test=false``, its validation error told to the study. ``Pruning`` reports every epoch's validation error to
Optuna and stops a trial its pruner gives up on; that run's record says ``pruned`` (never ``finished``, so
``src.report`` does not count it) and the study has it as PRUNED.

What a kill leaves, and what the next command does with it (``study.next_trial`` adopts the trial):
- killed mid-epoch: the run resumes from ``checkpoints/last.ckpt`` (src/run/resume.py);
- killed after the run wrote ``validated`` or ``pruned``, before the study heard: told now, not retrained.
"""
import logging
from pathlib import Path
from typing import Any

import optuna
import pytorch_lightning as pl
from omegaconf import DictConfig
from optuna.trial import TrialState

from src.run.errors import user_error
from src.run.lock import me
from src.run.records import read_record, record_failure, record_status
from src.run.signals import stop_on_signal
from src.train import train
from src.tuning.space import suggest, trial_config

log = logging.getLogger(__name__)

MONITOR = "val/error"


class Pruning(pl.Callback):
    """After each validation pass: ``trial.report(val/error, epoch)``; ``optuna.TrialPruned`` when the pruner
    says so. A resumed run reports its epochs again from the checkpoint's; Optuna keeps the first value."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.pruned_at_epoch = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or MONITOR not in trainer.callback_metrics:
            return
        epoch = trainer.current_epoch
        if epoch not in self.trial._cached_frozen_trial.intermediate_values:
            self.trial.report(float(trainer.callback_metrics[MONITOR]), step=epoch)
        if self.trial.should_prune():
            self.pruned_at_epoch = epoch
            raise optuna.TrialPruned(f"validation error {float(trainer.callback_metrics[MONITOR]):.2f} % "
                                     f"at epoch {epoch}")


def run_trial(study: optuna.Study, trial: optuna.Trial, cfg: DictConfig, space: dict[str, dict],
              study_dir: Path) -> TrialState:
    """Train the trial (or take the result its run dir already holds) and tell the study; its final state."""
    params = suggest(trial, space)
    trial.set_user_attr("worker", me())  # host, pid and SLURM job of the worker that (last) ran it
    trial_cfg = trial_config(cfg, params)
    run_dir = study_dir / f"trial_{trial.number}"
    record = read_record(run_dir)
    if record.get("status") == "pruned":
        return _tell(study, trial, TrialState.PRUNED, None, run_dir)
    if record.get("status") != "validated":
        log.info("trial %d: %s", trial.number, ", ".join(f"{k}={_short(v)}" for k, v in params.items()))
        pruning = Pruning(trial)
        try:
            with stop_on_signal(run_dir, trial_cfg) as guard:
                record = train(trial_cfg, run_dir, callbacks=[pruning, guard.callback()])
        except optuna.TrialPruned as e:
            record_status(run_dir, trial_cfg, status="pruned", pruned_at_epoch=pruning.pruned_at_epoch,
                          error=None, pruned=str(e))
            return _tell(study, trial, TrialState.PRUNED, None, run_dir)
        except Exception as e:
            if user_error(e) is None:
                raise
            # A diverged or refused trial uses its share of the budget like any other.
            record_failure(run_dir, user_error(e), trial_cfg)
            log.warning("trial %d failed: %s", trial.number, user_error(e))
            return _tell(study, trial, TrialState.FAIL, None, run_dir)
    return _tell(study, trial, TrialState.COMPLETE, record["val_error"], run_dir)


def _tell(study: optuna.Study, trial: optuna.Trial, state: TrialState, value, run_dir: Path) -> TrialState:
    study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    log.info("trial %d: %s%s (%s)", trial.number, state.name.lower(),
             f", validation error {value:.2f} %" if value is not None else "", run_dir)
    return state


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
