"""Entry point: ``python -m src.train dataset=digits case=case1`` (Hydra overrides)."""
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.callbacks import EpochHistory, last_checkpoint, run_callbacks
from src.data.superclasses import resolve_case
from src.discover import save_discovery_inputs
from src.errors import UserError
from src.evaluation import evaluation_options
from src.module import HALModule
from src.records import git_commit, read_record, record_failure, write_json

log = logging.getLogger(__name__)




def build_datamodule(cfg: DictConfig):
    """The dataset's datamodule with the case's class -> superclass table attached (None: baseline)."""
    # name and depth describe the dataset for the config; superclass_file is read by case=custom.
    datamodule = instantiate({k: v for k, v in cfg.dataset.items() if k not in ("name", "depth", "superclass_file")})
    datamodule.superclasses = resolve_case(cfg.case, cfg.dataset.name, datamodule.class_names)
    return datamodule


def train(cfg: DictConfig, run_dir: Path, callbacks: Sequence[pl.Callback] = ()) -> dict:
    """Fit on train (+val), test once with the final weights, write ``run_dir/metrics.json``.

    ``callbacks`` are added to the Trainer's (benchmarks and tests use it to observe a run).
    A run dir whose metrics.json is finished is skipped; one with a ``checkpoints/last.ckpt`` resumes from it.
    """
    previous = read_record(run_dir)
    if previous.get("status") == "finished":
        log.info("skipping %s: already finished (delete its metrics.json to run it again)", run_dir)
        return previous
    start = time.time()
    if cfg.seed is not None:
        pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    table = datamodule.superclasses
    num_superclasses = max(table) + 1 if table is not None else 0
    evaluation = evaluation_options(cfg.eval, table, cfg.dataset.name)
    record = {"dataset": cfg.dataset.name, "case": cfg.case.name, "depth": cfg.model.depth, "seed": cfg.seed,
              "superclasses": table, "epochs": cfg.trainer.max_epochs, "status": "running",
              "git_commit": git_commit()}
    write_json(run_dir / "metrics.json", record)

    datamodule.setup()
    channels, _, _ = datamodule.image_shape
    net = instantiate(cfg.model, num_classes=datamodule.num_classes, in_channels=channels,
                      num_superclasses=num_superclasses or None)
    module = HALModule(net, instantiate(cfg.optimizer), num_classes=datamodule.num_classes,
                       num_superclasses=num_superclasses, lr_min=cfg.lr_min, channels_last=cfg.channels_last,
                       compile=cfg.compile, class_names=list(datamodule.class_names), **evaluation)
    logger = pl.loggers.TensorBoardLogger(save_dir=str(run_dir), name="tb", version="", default_hp_metric=False)
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    history, checkpointing = EpochHistory(run_dir / "history.csv"), cfg.trainer.enable_checkpointing
    # A redraw every step is a terminal write every step: measurable on a GPU at hundreds of steps/s.
    progress = [pl.callbacks.TQDMProgressBar(cfg.progress_refresh_rate)] if cfg.trainer.enable_progress_bar else []
    # val_size=0 (the paper's protocol): no validation loop, rather than an empty one logging NaN metrics.
    trainer_args = {**cfg.trainer, **({"limit_val_batches": 0} if len(datamodule.splits["val"][0]) == 0 else {})}
    trainer = pl.Trainer(**trainer_args, logger=logger, default_root_dir=str(run_dir),
                         callbacks=[history, *run_callbacks(run_dir, cfg.test_curve, checkpointing), *progress,
                                    *callbacks])
    trainer.fit(module, datamodule=datamodule, ckpt_path=last_checkpoint(run_dir) if checkpointing else None)
    # A run resumed after its last epoch fits nothing: that epoch's metrics are then in the history.
    val = trainer.callback_metrics or (history.rows[-1] if history.rows else {})
    test = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    val_error = float(val["val/error"]) if "val/error" in val else None  # read before validate() below resets it
    if module.confusion_figure is not None:
        module.confusion_figure.savefig(run_dir / "confusion.png", dpi=120)
    save_discovery_inputs(run_dir, trainer, module, datamodule, cfg.dataset.name, cfg.case.name)

    record.update(
        test_error=test["test/error"], test_acc=100 - test["test/error"], test_loss=test["test/loss"],
        val_error=val_error, **module.test_evaluation,
        eval_hierarchy=evaluation["hierarchy"], inferred_rule=evaluation["inferred_rule"],
        resumed_at_epoch=history.resumed_at_epoch, duration_s=round(time.time() - start, 2), status="finished")
    write_json(run_dir / "metrics.json", record)
    return record


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        return train(cfg, run_dir)
    except Exception as e:
        e = user_error(e) or e
        record = record_failure(run_dir, e, cfg)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            # One failed job must not stop the sweep: its metrics.json says failed, the report lists it.
            if not isinstance(e, UserError):
                log.exception("job %s failed", run_dir)
            print(f"error: {run_dir.name}: {e}", file=sys.stderr)
            return record
        if isinstance(e, UserError):
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        raise
    except BaseException as e:  # Ctrl-C, SIGTERM: stop (a sweep too); re-running resumes from the checkpoint
        record_failure(run_dir, e, cfg)
        raise




def user_error(error: BaseException):
    """The UserError behind ``error``, if any: ``hydra.utils.instantiate`` wraps whatever a constructor
    raises (a bad folder, a bad depth) in an InstantiationException, whose message is a traceback summary."""
    while error is not None and not isinstance(error, UserError):
        error = error.__cause__
    return error


def quote_depth(arg: str) -> str:
    """``depth=28`` -> ``depth='28'``: Hydra parses a bare number as an int, which it rejects as a
    config group choice ("Config group override must be a string"). Sweeps too: depth=10,28."""
    key, sep, value = arg.partition("=")
    if key.lstrip("~+") != "depth" or not sep or not all(v.strip().isdigit() for v in value.split(",")):
        return arg
    return key + "=" + ",".join(f"'{v.strip()}'" for v in value.split(","))


if __name__ == "__main__":
    sys.argv = [quote_depth(a) for a in sys.argv]
    main()
