"""Entry point: ``python -m src.train dataset=digits case=case1`` (Hydra overrides).

``build(cfg, run_dir)`` is the composition root: the one place that makes the datamodule, the module and
the callbacks of a run (tests and benchmarks call it too). ``train(cfg, run_dir)`` fits, tests and records.
"""
from __future__ import annotations  # the annotations name Lightning's classes without importing it

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from src.run import launch, zygote
from src.run.config import check_config

# torch, Lightning and the project's models are imported inside the functions that train, not here: --help,
# --cfg job and the errors Hydra raises while composing answer in about a second (bench/startup.py).

log = logging.getLogger(__name__)


def make_datamodule(dataset: DictConfig) -> pl.LightningDataModule:
    """The ``dataset`` config's datamodule. Its ``depth`` is the dataset's default network depth (the top-level
    ``depth``), not an argument of the datamodule."""
    from hydra.utils import instantiate

    arguments = OmegaConf.to_container(dataset, resolve=True)
    arguments.pop("depth", None)
    return instantiate(arguments)


def build(cfg: DictConfig, run_dir: Path) -> tuple[pl.LightningDataModule, HALModule, list[pl.Callback]]:
    """The datamodule (with the case's class -> superclass table), the module (network + method) and the
    callbacks of a run writing to ``run_dir``. Seed first: the network's initialisation draws from it.

    The case and the tree of the hierarchy metrics are resolved here, once, and handed to those that use them."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from src.data.superclasses import dataset_cases, evaluation_tree, resolve_case
    from src.evaluation.callbacks import (AuxiliaryScores, DiscoveryInputs, PerEpochTestLoss, TestProtocols,
                                          Throughput)
    from src.evaluation.flops import TrainingFlops
    from src.evaluation.probes import StageProbes
    from src.evaluation.protocols import evaluation_options, masked_tables
    from src.models.module import HALModule
    from src.models.optimizers import lr_factor
    from src.run.console import progress_bar
    from src.run.epoch_lines import EpochLines
    from src.run.errors import ConfigError
    from src.run.resume import EpochHistory, RNGState, checkpoint_callback

    datamodule = make_datamodule(cfg.dataset)
    evaluation = evaluation_options(cfg.eval)
    names = datamodule.class_names
    cases = dataset_cases(cfg.dataset.name, names, datamodule.tree)
    case = resolve_case(cfg.case, cases, names, cfg.dataset.name)
    hierarchy = evaluation_tree(cfg.eval.hierarchy, cases, case, datamodule.tree)
    log.info(scoring_line(hierarchy, cfg.eval.hierarchy))
    datamodule.superclasses = None if case is None else case.table
    method = instantiate(cfg.method)
    if method.needs_superclasses and case is None:
        raise ConfigError(f"method={method.name} needs superclasses, and case=baseline has none: "
                          "choose a case (case1..case4, coarse, level1..3) or case=custom")
    num_superclasses = 0 if case is None else case.num_superclasses
    datamodule.setup()
    k, channels = datamodule.num_classes, datamodule.image_shape[0]
    net = instantiate(cfg.model, num_classes=k, in_channels=channels, position=method.position,
                      num_superclasses=(num_superclasses if method.auxiliary else 0) or None)
    method.tree = None if case is None else case.tree
    method.attach(net, k, num_superclasses)
    tree, level = (None, None) if case is None else (case.tree, case.level)
    factor = lr_factor(cfg.get("lr_rule", "shared"), method)   # after method.tree: the scale may read it
    module = HALModule(net, instantiate(cfg.optimizer, lr=cfg.optimizer.lr * factor), method, num_classes=k, tree=tree,
                       level=level, lr_min=cfg.lr_min * factor, channels_last=cfg.channels_last, compile=cfg.compile,
                       divergence_factor=cfg.divergence_factor, lr_factor=factor)
    run_dir = Path(run_dir)
    protocols = TestProtocols(run_dir, case, hierarchy, names, masked=masked_tables(case, cases, net.auxiliary is not None),
                              **evaluation)
    callbacks = [EpochHistory(run_dir / "history.csv"), RNGState(), AuxiliaryScores(run_dir / "aux_scores.npz"),
                 Throughput(), TrainingFlops(), pl.callbacks.LearningRateMonitor(logging_interval="epoch"),
                 protocols,
                 DiscoveryInputs(run_dir / "hierarchy.npz", cfg.dataset.name, case, names, evaluation["inferred_rule"],
                                 cases)]
    callbacks.extend(method.callbacks)
    if cfg.test_curve:
        callbacks.append(PerEpochTestLoss())
    if cfg.probe:
        callbacks.append(StageProbes(hierarchy=protocols.table))  # the superclass metrics' table
    if cfg.trainer.enable_checkpointing:  # Lightning refuses a ModelCheckpoint otherwise
        callbacks.append(checkpoint_callback(run_dir))
    if progress_bar(cfg):
        # A redraw every step is a terminal write every step: measurable on a GPU at hundreds of steps/s.
        callbacks.append(pl.callbacks.TQDMProgressBar(cfg.progress_refresh_rate))
    if cfg.trainer.enable_progress_bar:  # train.log's epoch lines; the console's too, off a terminal
        callbacks.append(EpochLines(console=not progress_bar(cfg)))
    return datamodule, module, callbacks


def scoring_line(tree, option) -> str:
    """The start line naming the tree behind the hierarchy metrics (severity, HD@k, CRM, level_acc)."""
    if tree is None:
        return f"hierarchy metrics: none (eval.hierarchy={option})"
    levels = " > ".join(level.name for level in tree.levels)
    return f"hierarchy metrics scored on tree '{tree.name}' (levels: class > {levels}; eval.hierarchy={option})"


def train(cfg: DictConfig, run_dir: Path, callbacks: Sequence[pl.Callback] = ()) -> dict:
    """Fit on train (+val), test once with the final weights, write ``run_dir/metrics.json``.

    ``callbacks`` are added to the Trainer's (benchmarks and tests use it to observe a run).
    A run dir whose metrics.json is finished is skipped; one with a ``checkpoints/last.ckpt`` resumes from it.
    """
    run_dir = Path(run_dir)
    check_config(cfg)
    import pytorch_lightning as pl
    import torch

    from src.evaluation.protocols import headline_errors
    from src.run.resources import check_hardware
    from src.run.provenance import code_moved, provenance
    from src.run.records import machine, read_record, write_json
    from src.run.resume import EpochHistory, finished_record, usable_checkpoint

    check_hardware(cfg)  # trainer.accelerator=gpu without one: one line, not Lightning's traceback
    launch.patch_lightning()  # DDP ranks get this job's command, also when tests call train() directly
    previous = finished_record(run_dir)
    if previous is not None:
        return previous
    before = read_record(run_dir)  # an interrupted attempt's: the code it ran (code_moved below)
    start = time.time()
    if cfg.get("threads") is not None:
        torch.set_num_threads(cfg.threads)
    if cfg.seed is not None:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, module, run_callbacks = build(cfg, run_dir)
    record = {"dataset": cfg.dataset.name, "case": cfg.case.name, "method": module.method.name,
              "position": module.net.position, "depth": cfg.model.get("depth"), "seed": cfg.seed,
              "superclasses": datamodule.superclasses, "epochs": cfg.trainer.max_epochs, "status": "running",
              "threads": torch.get_num_threads(), "machine": machine(), **provenance(run_dir)}
    write_json(run_dir / "metrics.json", record)

    logger = make_logger(cfg, run_dir)
    trainer = pl.Trainer(**trainer_arguments(cfg, datamodule), logger=logger, default_root_dir=str(run_dir),
                         callbacks=[*run_callbacks, *callbacks])
    checkpoint = usable_checkpoint(run_dir) if cfg.trainer.enable_checkpointing else None
    if checkpoint:
        code_moved(before, record, "resuming", run_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint)
    history = next(c for c in run_callbacks if isinstance(c, EpochHistory))
    # A run resumed after its last epoch fits nothing: that epoch's metrics are then in the history.
    val = trainer.callback_metrics or (history.rows[-1] if history.rows else {})
    val_error = float(val["val/error"]) if "val/error" in val else None  # read before test() replaces them
    if cfg.get("test", True):  # test=false (tuning trials, src/tuning/): the test split is never read
        test = trainer.test(module, datamodule=datamodule, verbose=False)[0]
        record.update(test_error=test["test/error"], test_acc=100 - test["test/error"], test_loss=test["test/loss"],
                      **module.test_heads)
    record.update(val_error=val_error, **module.parameter_counts())
    for callback in run_callbacks:  # what the extra passes measured (protocols, throughput, resume, probes)
        record.update(getattr(callback, "record", {}))
    record.update(headline_errors(record))
    # debug=fast / debug=overfit: a record no sweep skips and no report counts.
    # test=false: "validated", a record no report counts either (it has no test error).
    status = "debug" if cfg.get("debug_run") else "finished" if cfg.get("test", True) else "validated"
    record.update(duration_s=round(time.time() - start, 2), status=status)
    log_final(logger, cfg, {f"hparams/{k}": v for k, v in record.items() if isinstance(v, float)
                            and k.startswith("test_")}, trainer.global_step)
    write_json(run_dir / "metrics.json", record)
    return record


def trainer_arguments(cfg: DictConfig, datamodule: pl.LightningDataModule) -> dict:
    """``pl.Trainer`` arguments from ``cfg.trainer``: the keys set, the progress bar only on a terminal."""
    from src.run.console import progress_bar

    args = {k: cfg.trainer[k] for k in cfg.trainer if not OmegaConf.is_missing(cfg.trainer, k)}
    args["enable_progress_bar"] = progress_bar(cfg)
    # val_size=0 (the paper's protocol): no validation loop, rather than an empty one logging NaN metrics.
    if len(datamodule.splits["val"][0]) == 0:
        args["limit_val_batches"] = 0
    return args


def make_logger(cfg: DictConfig, run_dir: Path) -> pl.loggers.Logger:
    """The Lightning logger of ``cfg.logger`` (conf/logger/): files in the run dir unless it names a
    ``save_dir``; runs named after their run dir where the logger has names."""
    from hydra.utils import instantiate

    extra = {"save_dir": str(run_dir)} if cfg.logger.get("save_dir") is None else {}
    for key in ("run_name", "name"):
        if key in cfg.logger and cfg.logger[key] is None:
            extra[key] = run_dir.name
    return instantiate(cfg.logger, **extra)


def log_final(logger: pl.loggers.Logger, cfg: DictConfig, metrics: dict, step: int) -> None:
    """The config and the final test metrics, once. TensorBoard pairs them in its HPARAMS tab (``tensorboard
    --logdir <sweep>`` compares the jobs of a sweep); the other loggers take them as params and metrics."""
    import pytorch_lightning as pl

    params = OmegaConf.to_container(cfg, resolve=True)
    if isinstance(logger, pl.loggers.TensorBoardLogger):
        logger.log_hyperparams(params, metrics=metrics)
    else:
        logger.log_hyperparams(params)
        logger.log_metrics(metrics, step=step)
    logger.finalize("success")
    if isinstance(logger, pl.loggers.WandbLogger):
        # Lightning leaves the wandb run open, and the next job of a sweep would log into it.
        logger.experiment.finish()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    return launch.run_job(train, cfg)


if __name__ == "__main__":
    zygote.start(sys.argv[1:], "src.train")  # a CPU sweep's workers start importing now, beside Hydra's work
    launch.cli(main)
