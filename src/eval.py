"""Rescoring from a checkpoint: ``python -m src.eval RUN_DIR [overrides] [--update]``.

Loads the run's config (``RUN_DIR/.hydra/config.yaml``, with the overrides given here, e.g.
``eval.inferred_rule=logit``) and its final weights (``checkpoints/last.ckpt``, replaced after every epoch,
so after the last one it holds the weights the run was tested with), reruns the test pass with every test
protocol and metric of this version of the code, and writes ``RUN_DIR/eval.json``: the fields of
``metrics.json`` that a test pass makes, under the same names (no ``status``). ``metrics.json`` is left as
it is, unless ``--update``: then the fields it lacks are added to it (none that it has is changed), so runs
trained before a metric existed can be reported with it.
"""
import argparse
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.evaluation.callbacks import TestProtocols
from src.run.config import did_you_mean
from src.run.console import quiet, shown
from src.run.errors import UserError, exit_code
from src.evaluation.flops import train_flops_per_image
from src.evaluation.protocols import headline_errors
from src.run.provenance import FIELDS, code_moved, code_state, fields, save_patch
from src.run.records import METRICS, machine, read_record, write_json
from src.run.resume import LAST_CHECKPOINT
from src.run.summary import test_errors
from src.train import build, trainer_arguments

EVAL = "eval.json"
EVAL_PATCH = "eval.code.patch"  # the rescoring code's patch, beside the training's code.patch
# Copied from metrics.json: what the evaluated run is (the report groups by them).
IDENTITY = ("dataset", "case", "method", "position", "depth", "seed", "superclasses", "epochs")


class EvalError(UserError):
    """The run dir cannot be rescored."""


def run_config(run_dir: Path, overrides: Sequence[str] = ()) -> DictConfig:
    """The run's composed config with ``key=value`` overrides; a key it lacks is one line, with a hint."""
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.exists():
        raise EvalError(f"{run_dir} is not a run dir of src.train (no .hydra/config.yaml)")
    cfg = OmegaConf.load(path)
    OmegaConf.set_struct(cfg, True)
    for override in overrides:
        key, sep, _ = override.partition("=")
        if not sep:
            raise EvalError(f"override {override!r} is not key=value")
        try:
            cfg.merge_with(OmegaConf.from_dotlist([override]))
        except OmegaConfBaseException:
            parent, _, name = key.rpartition(".")
            node = OmegaConf.select(cfg, parent) if parent else cfg
            hint = did_you_mean(name, list(node) if isinstance(node, DictConfig) else [], f"{parent}." if parent else "")
            raise EvalError(f"{key} is not a key of the run's config" + (f" ({hint})" if hint else "")) from None
    return cfg


def load_weights(checkpoint: Path) -> dict:
    """The ``state_dict`` of a checkpoint, unpickled with ``weights_only=True``: tensors, numbers, strings, lists
    and dicts only, so a file from elsewhere cannot run code on load. Lightning stores a type by name only for
    hyper-parameters that are an omegaconf container; HALModule saves a dict of numbers, and the rest of its
    checkpoints (loops, callbacks' states, optimiser) are plain too, so no other type is allowed."""
    try:
        weights = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    except Exception as e:  # UnpicklingError for a forbidden global; anything else for a damaged file
        # torch's message is a page: keep the global it refused, or its WeightsUnpickler line, or its first line
        text = str(e)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text) or re.search(r"WeightsUnpickler error: ([^\n]+)", text)
        why = found.group(1) if found else (text.strip().splitlines() or [type(e).__name__])[0]
        raise EvalError(f"{checkpoint} is not a plain checkpoint ({why}): src.eval loads only tensors, numbers, "
                        "strings, lists and dicts") from None
    return weights


def evaluate(run_dir: Path, overrides: Sequence[str] = ()) -> dict:
    """The test pass of ``run_dir``'s final weights: the record written to ``eval.json``."""
    run_dir = Path(run_dir)
    cfg = run_config(run_dir, overrides)
    checkpoint = run_dir / LAST_CHECKPOINT
    if not checkpoint.exists():
        raise EvalError(f"{checkpoint} not found: the run kept no weights (trainer.enable_checkpointing=false?)")
    start = time.time()
    weights = load_weights(checkpoint)
    previous = read_record(run_dir)
    commit, patch = code_state()
    code = fields(commit, patch, EVAL_PATCH)
    code_moved(previous, code, "rescoring", run_dir)
    if cfg.get("threads") is not None:
        torch.set_num_threads(cfg.threads)
    if cfg.seed is not None:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
    with tempfile.TemporaryDirectory() as scratch:  # build's callbacks write figures: not over the run's
        datamodule, module, callbacks = build(cfg, Path(scratch))
        protocols = next(c for c in callbacks if isinstance(c, TestProtocols))
        args = trainer_arguments(cfg, datamodule)
        for key in ("strategy", "num_nodes"):  # one process: the test pass covers the whole test set anyway
            args.pop(key, None)
        args.update(devices=1, enable_checkpointing=False, enable_progress_bar=False)
        # The weights only: the optimiser, loops and callback states of the checkpoint are for resuming.
        module.load_state_dict(weights)
        trainer = pl.Trainer(**args, logger=False, callbacks=[protocols], default_root_dir=scratch)
        test = trainer.test(module, datamodule=datamodule, verbose=False)[0]
        record = {k: previous[k] for k in IDENTITY if k in previous}
        record.update(test_error=test["test/error"], test_acc=100 - test["test/error"], test_loss=test["test/loss"],
                      **module.test_heads, **module.parameter_counts(), **protocols.record,
                      flops_per_train_image=train_flops_per_image(module, datamodule))
        record.update(headline_errors(record))
    # eval_duration_s: this evaluation's time; duration_s stays the training run's
    record.update(threads=torch.get_num_threads(), machine=machine(), **code,
                  eval_duration_s=round(time.time() - start, 2))
    save_patch(run_dir, patch, EVAL_PATCH)
    return record


def update_metrics(run_dir: Path, record: dict) -> list[str]:
    """Add the fields of ``record`` that the finished run's metrics.json lacks; the names added."""
    previous = read_record(run_dir)
    if previous.get("status") != "finished":
        raise EvalError(f"{Path(run_dir) / METRICS} is not a finished run's record: --update adds only to those")
    # Not the provenance: the training's code stays the one metrics.json names (eval.json has the rescoring's).
    added = [k for k in record if k not in previous and k not in FIELDS]
    if added:
        write_json(Path(run_dir) / METRICS, {**previous, **{k: record[k] for k in added}})
    return added


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m src.eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run dir of src.train (holds .hydra/ and checkpoints/)")
    parser.add_argument("overrides", nargs="*", help="key=value changes to the run's config (eval.*, trainer.*)")
    parser.add_argument("--update", action="store_true", help="also add the new fields to metrics.json")
    args = parser.parse_args(argv)
    quiet()
    try:
        if args.update:  # refuse before the test pass, not after it
            update_metrics(args.run_dir, {})
        record = evaluate(args.run_dir, args.overrides)
        write_json(args.run_dir / EVAL, record)
        added = update_metrics(args.run_dir, record) if args.update else None
    except Exception as e:
        sys.exit(exit_code(e))
    line = f"eval {shown(args.run_dir)}: test error {test_errors(record)}; wrote {shown(args.run_dir / EVAL)}"
    if added is not None:
        line += f"; added to {METRICS}: {', '.join(added) or 'nothing (it has every field)'}"
    print(line)


if __name__ == "__main__":
    main()
