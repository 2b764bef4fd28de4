"""Entry point: ``python -m src.train dataset=digits case=case1`` (Hydra overrides).

``build(cfg, run_dir)`` is the composition root: the one place that makes the datamodule, the module and
the callbacks of a run (tests and benchmarks call it too). ``train(cfg, run_dir)`` fits, tests and records.
"""
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, OverrideParseException
from hydra.types import RunMode
from hydra.utils import get_original_cwd, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.strategies.launchers import subprocess_script

from src.callbacks import AuxiliaryScores, DiscoveryInputs, PerEpochTestLoss, TestProtocols, Throughput
from src.config import check_config
from src.data.superclasses import resolve_case, superclass_table
from src.errors import ConfigError, exit_code, user_error
from src.evaluation import evaluation_options
from src.module import HALModule
from src.paper import CASES, PAPER_CASES
from src.probes import StageProbes
from src.records import git_commit, record_failure, write_json
from src.resume import EpochHistory, RNGState, checkpoint_callback, finished_record, usable_checkpoint
from src.signals import stop_on_signal

log = logging.getLogger(__name__)


def build(cfg: DictConfig, run_dir: Path) -> tuple[pl.LightningDataModule, HALModule, list[pl.Callback]]:
    """The datamodule (with the case's class -> superclass table), the module (network + method) and the
    callbacks of a run writing to ``run_dir``. Seed first: the network's initialisation draws from it."""
    datamodule = instantiate(cfg.dataset)
    datamodule.superclasses = table = resolve_case(cfg.case, cfg.dataset.name, datamodule.class_names)
    method = instantiate(cfg.method)
    if method.needs_superclasses and table is None:
        raise ConfigError(f"method={method.name} needs superclasses, and case=baseline has none: "
                          "choose case=case1..case4 or case=custom")
    num_superclasses = max(table) + 1 if table is not None else 0
    evaluation = evaluation_options(cfg.eval, table, cfg.dataset.name)
    datamodule.setup()
    k, channels = datamodule.num_classes, datamodule.image_shape[0]
    net = instantiate(cfg.model, num_classes=k, in_channels=channels, position=method.position,
                      num_superclasses=(num_superclasses if method.auxiliary else 0) or None)
    method.attach(net, k, num_superclasses)
    module = HALModule(net, instantiate(cfg.optimizer), method, num_classes=k, num_superclasses=num_superclasses,
                       lr_min=cfg.lr_min, channels_last=cfg.channels_last, compile=cfg.compile,
                       divergence_factor=cfg.divergence_factor)
    run_dir = Path(run_dir)
    callbacks = [EpochHistory(run_dir / "history.csv"), RNGState(), AuxiliaryScores(run_dir / "aux_scores.npz"),
                 Throughput(), pl.callbacks.LearningRateMonitor(logging_interval="epoch"),
                 TestProtocols(run_dir, class_names=datamodule.class_names,
                               masked=masked_tables(cfg, table, net.auxiliary is not None), **evaluation),
                 DiscoveryInputs(run_dir / "hierarchy.npz", cfg.dataset.name, cfg.case.name, table,
                                 datamodule.class_names, evaluation["inferred_rule"])]
    if cfg.test_curve:
        callbacks.append(PerEpochTestLoss())
    if cfg.probe:
        callbacks.append(StageProbes(hierarchy=evaluation["hierarchy"]))
    if cfg.trainer.enable_checkpointing:  # Lightning refuses a ModelCheckpoint otherwise
        callbacks.append(checkpoint_callback(run_dir))
    if cfg.trainer.enable_progress_bar:
        # A redraw every step is a terminal write every step: measurable on a GPU at hundreds of steps/s.
        callbacks.append(pl.callbacks.TQDMProgressBar(cfg.progress_refresh_rate))
    return datamodule, module, callbacks


def masked_tables(cfg: DictConfig, table: Optional[list[int]], auxiliary: bool) -> dict[str, list[int]]:
    """The superclass tables of the ``masked`` protocol: a run with the block, its own (the same hint as its
    oracle); any other run, every Table 1 case of its dataset and its own case or ``eval.hierarchy``."""
    name = cfg.case.name
    if auxiliary:
        return {name: table}
    tables = {c: superclass_table(cfg.dataset.name, c) for c in CASES} if cfg.dataset.name in PAPER_CASES else {}
    if table is not None:
        tables.setdefault(name, table)
    return tables


def train(cfg: DictConfig, run_dir: Path, callbacks: Sequence[pl.Callback] = ()) -> dict:
    """Fit on train (+val), test once with the final weights, write ``run_dir/metrics.json``.

    ``callbacks`` are added to the Trainer's (benchmarks and tests use it to observe a run).
    A run dir whose metrics.json is finished is skipped; one with a ``checkpoints/last.ckpt`` resumes from it.
    """
    run_dir = Path(run_dir)
    check_config(cfg)
    previous = finished_record(run_dir)
    if previous is not None:
        return previous
    start = time.time()
    if cfg.seed is not None:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, module, run_callbacks = build(cfg, run_dir)
    record = {"dataset": cfg.dataset.name, "case": cfg.case.name, "method": module.method.name,
              "position": module.net.position, "depth": cfg.model.depth, "seed": cfg.seed,
              "superclasses": datamodule.superclasses, "epochs": cfg.trainer.max_epochs, "status": "running",
              "git_commit": git_commit()}
    write_json(run_dir / "metrics.json", record)

    logger = pl.loggers.TensorBoardLogger(save_dir=str(run_dir), name="tb", version="", default_hp_metric=False)
    # val_size=0 (the paper's protocol): no validation loop, rather than an empty one logging NaN metrics.
    trainer_args = {**{k: cfg.trainer[k] for k in cfg.trainer if not OmegaConf.is_missing(cfg.trainer, k)}, **({"limit_val_batches": 0} if len(datamodule.splits["val"][0]) == 0 else {})}
    trainer = pl.Trainer(**trainer_args, logger=logger, default_root_dir=str(run_dir),
                         callbacks=[*run_callbacks, *callbacks])
    checkpoint = usable_checkpoint(run_dir) if cfg.trainer.enable_checkpointing else None
    trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint)
    history = next(c for c in run_callbacks if isinstance(c, EpochHistory))
    # A run resumed after its last epoch fits nothing: that epoch's metrics are then in the history.
    val = trainer.callback_metrics or (history.rows[-1] if history.rows else {})
    val_error = float(val["val/error"]) if "val/error" in val else None  # read before test() replaces them
    test = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    protocols = next(c for c in run_callbacks if isinstance(c, TestProtocols))
    throughput = next(c for c in run_callbacks if isinstance(c, Throughput))
    heads = dict(module.test_heads)
    probes = [c.split for c in run_callbacks if isinstance(c, StageProbes)]
    if "test_error_heads" in heads:
        heads["test_error_heads"][-1] = test["test/error"]  # the main head, last
    record.update(
        test_error=test["test/error"], test_acc=100 - test["test/error"], test_loss=test["test/loss"],
        val_error=val_error, **protocols.record, **heads,
        eval_hierarchy=protocols.hierarchy, inferred_rule=protocols.inferred_rule,
        params_train=sum(p.numel() for p in module.net.parameters()),
        params_inference=sum(p.numel() for p in module.net.parameters()) - sum(
            p.numel() for p in module.net.taps.parameters()),
        train_images_per_s=throughput.images_per_s, **({"probe_split": probes[0]} if probes else {}),
        resumed_at_epoch=history.resumed_at_epoch, duration_s=round(time.time() - start, 2), status="finished")
    # The HPARAMS tab of `tensorboard --logdir <sweep>` compares the jobs of a sweep on their final metrics.
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True), metrics={
        f"hparams/{k}": v for k, v in record.items() if isinstance(v, float) and k.startswith("test_")})
    write_json(run_dir / "metrics.json", record)
    return record


def ddp_child_command(local_rank: int) -> tuple[list[str], str]:
    """The command Lightning's DDP launcher starts for ranks 1..N-1 of this job (replacing its own
    ``_hydra_subprocess_cmd``, which re-runs ``sys.argv``: in a multirun that is the whole sweep, ``-m``
    included). This job's own overrides, its run dir, and no ``.hydra/`` copy: rank 0 wrote it."""
    hydra_cfg = HydraConfig.get()
    argv, flags = sys.argv[1:], []
    for i, arg in enumerate(argv):  # the config dir/name options, as given
        if arg.split("=")[0] in ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn"):
            flags += [arg] if "=" in arg else argv[i:i + 2]
    command = [sys.executable, "-m", "src.train", *flags, *hydra_cfg.overrides.task,
               f"hydra.run.dir={hydra_cfg.runtime.output_dir}", f"hydra.job.name=train_ddp_process_{local_rank}",
               "hydra.output_subdir=null"]
    return command, get_original_cwd()


subprocess_script._hydra_subprocess_cmd = ddp_child_command
# Under DDP Lightning asks for sync_dist=True on every epoch-level log. Every value logged here is already
# over all ranks: torchmetrics' compute() syncs, the auxiliary statistics are reduced in
# HALModule._log_epoch, TestProtocols passes over the whole test set. Averaging equal values again is a no-op.
warnings.filterwarnings("ignore", message=r".*sync_dist=True.* when logging on epoch level")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    os.environ.pop(_WRAPPED, None) and os.environ.pop("HYDRA_FULL_ERROR", None)  # see cli()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        with stop_on_signal(run_dir, cfg) as guard:
            return train(cfg, run_dir, callbacks=[guard.callback()])
    except Exception as e:
        record = record_failure(run_dir, user_error(e) or e, cfg)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            # One failed job must not stop the sweep: its metrics.json says failed, the report lists it.
            if user_error(e) is None:
                log.exception("job %s failed", run_dir)
            print(f"error: {run_dir.name}: {user_error(e) or e}", file=sys.stderr)
            return record
        sys.exit(exit_code(e))


_WRAPPED = "_HAL_HYDRA_FULL_ERROR"


def hydra_error(error: BaseException) -> Optional[ConfigError]:
    """One line for what Hydra raises before ``main`` runs: a value the schema refuses (naming its key), a bad
    override, a run dir it cannot create. None for anything else."""
    if isinstance(error, OSError) and error.filename is not None:
        return ConfigError(f"cannot write the run dir (hydra.run.dir / hydra.sweep.dir): {error.strerror}: "
                           f"{error.filename}")
    if not isinstance(error, (HydraException, OmegaConfBaseException)):
        return None
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    key = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")), None)
    first = next((line for line in lines if not line.startswith(("In '", "full_key:", "object_type=",
                                                                  "reference_type="))), type(cause).__name__)
    if key:
        return ConfigError(f"{key}: {first}")
    if isinstance(error, OverrideParseException) or "Could not find" not in str(error):
        return ConfigError(first)
    # An unknown group option: Hydra's message lists the options (its search path is left out).
    return ConfigError(str(error).split("Config search path")[0].strip())


def cli() -> None:
    """``python -m src.train``: also what Hydra refuses before ``main`` runs is one ``error:`` line, exit 1.
    Hydra prints those errors itself, over several lines, unless ``HYDRA_FULL_ERROR`` is set
    (hydra/_internal/utils.py, ``run_and_report``): set it so they reach here; ``main`` unsets it, so its
    own errors and the DDP ranks it starts are as before. A user's own HYDRA_FULL_ERROR=1 is left alone."""
    if "HYDRA_FULL_ERROR" in os.environ:
        return main()
    os.environ.update({"HYDRA_FULL_ERROR": "1", _WRAPPED: "1"})
    try:
        main()
    except Exception as e:
        if os.environ.get(_WRAPPED) is None:  # raised after main() started: not Hydra's composition
            raise
        sys.exit(exit_code(hydra_error(e) or e))


if __name__ == "__main__":
    cli()
