"""Every extra pass over data is a callback here, and all of them run through ``eval_batches``.

- ``PerEpochTestLoss``: test loss/error per epoch for the paper's loss figures, logged as ``curve/*``.
- ``AuxiliaryScores``: ``aux_scores.npz``, the auxiliary score of every training image (Figs 3/5/7).
- ``TestProtocols``: the test confusions of every protocol (``src.evaluation.protocols``), the hierarchy and mistake
  metrics of ``metrics.json`` (``src.evaluation.hierarchy``, ``src.evaluation.mistakes``) and ``confusion.png``.
- ``DiscoveryInputs``: ``hierarchy.npz``, the validation confusion and the class vectors that
  ``python -m src.discover`` clusters.

None of them changes weights, BatchNorm statistics or random state, and nothing they compute feeds back into
training or model selection. A callback's ``record`` (a dict) is added to the run's ``metrics.json``. The callbacks of resuming are in ``src/run/resume.py``.
"""
import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Optional

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from src.data.pipeline import normalize
from src.data.superclasses import Case
from src.evaluation.protocols import PROTOCOLS, confusion_figure, error, evaluation_record, masked_scores, protocol_scores
from src.evaluation.scale import DENSE_CONFUSION_LIMIT, sparse_confusion
from src.evaluation.mistakes import MistakeMetrics
from src.run.records import write_atomic
from src.data.tree import ClassTree

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _eval_mode(trainer: pl.Trainer, module: pl.LightningModule):
    """No grad, eval-mode BatchNorm (running statistics untouched), the Trainer's precision."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            yield
    finally:
        module.train(was_training)


def eval_batches(trainer: pl.Trainer, module: pl.LightningModule, split: str,
                 index: Optional[torch.Tensor] = None) -> Iterator[tuple]:
    """(images, superclass, label) batches of a split (or of its rows ``index``), normalised but never augmented,
    on the module's device, with the module in eval mode. Without ``index`` the batches are those of the split's
    evaluation loader (same size, same order)."""
    datamodule = trainer.datamodule
    images, superclass, label = datamodule.splits[split]
    device = module.device
    mean, std = datamodule.mean.to(device), datamodule.std.to(device)
    step = datamodule.eval_batch_size
    with _eval_mode(trainer, module):
        if index is None and hasattr(datamodule, "eval_loader"):  # streaming: decoded in DataLoader workers
            for x, s, y in datamodule.eval_loader(split):
                yield normalize(x.to(device, non_blocking=True), mean, std), s.to(device), y.to(device)
            return
        for i in range(0, len(label) if index is None else len(index), step):
            if index is None:
                rows = slice(i, i + step)
            else:
                rows = index[i:i + step].to(images.device)
            x = images[rows].to(device, non_blocking=True)
            yield normalize(x, mean, std), superclass[rows].to(device), label[rows].to(device)


def confusion_counts(predicted: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """C[true, predicted] of one batch, on the CPU."""
    index = (label * num_classes + predicted).cpu()
    return torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)


class PerEpochTestLoss(pl.Callback):
    """Test loss and error after every epoch, logged as ``curve/test_loss`` and ``curve/test_error``.

    Only for the paper's loss-per-epoch figures: nothing reads it back (no early stopping, no model
    selection: the final weights are tested).
    """

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loss_sum, wrong, n = 0.0, 0, 0
        for images, superclass, label in eval_batches(trainer, pl_module, "test"):
            logits = pl_module(images, superclass).logits
            loss_sum += F.cross_entropy(logits.float(), label, reduction="sum").item()
            wrong += (logits.argmax(1) != label).sum().item()
            n += len(label)
        pl_module.log("curve/test_loss", loss_sum / n)
        pl_module.log("curve/test_error", 100 * wrong / n)


class Throughput(pl.Callback):
    """Training images per second over the training epochs (the first left out as warm-up when there are
    more): the cost column of the report. Validation, checkpoints and these callbacks' passes are not timed."""

    def __init__(self) -> None:
        self.seconds, self.images, self.epochs, self.start = 0.0, 0, 0, None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.images += len(batch[0]) * trainer.world_size

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self.epochs += 1
        if self.epochs == 1 and trainer.max_epochs - trainer.current_epoch > 1:
            self.images = 0  # warm-up epoch
        else:
            self.seconds += time.perf_counter() - self.start

    @property
    def record(self) -> dict:
        return {"train_images_per_s": round(self.images / self.seconds, 1) if self.seconds else None}


class AuxiliaryScores(pl.Callback):
    """At the end of training, ``aux_scores.npz``: ``score`` (the auxiliary score a), ``superclass`` and
    ``label`` of every training image, with the true superclass fed and no augmentation (Figs 3/5/7)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not pl_module.has_auxiliary:
            return
        scores, superclasses, labels = [], [], []
        for images, superclass, label in eval_batches(trainer, pl_module, "train"):
            scores.append(pl_module(images, superclass).auxiliary_score.squeeze(1).float().cpu())
            superclasses.append(superclass.cpu())
            labels.append(label.cpu())
        write_atomic(self.path, lambda f: np.savez(
            f, score=torch.cat(scores).numpy(), superclass=torch.cat(superclasses).numpy(),
            label=torch.cat(labels).numpy()), binary=True)


class TestProtocols(pl.Callback):
    """After the test pass: one confusion matrix per protocol over the test split, the evaluation fields of
    ``metrics.json`` (``self.record``), their ``test/*`` logs, and ``confusion.png`` (also in TensorBoard).

    ``case`` is the run's case (None: the baseline); its table feeds the inferred protocol and, else the finest
    level of ``hierarchy``, the superclass metrics. ``hierarchy`` is the tree every run is scored against
    (``eval.hierarchy``): the mistake metrics of ``src.evaluation.mistakes`` on the ``metrics_protocol`` scores, and the
    ProxyDR metrics of the class vectors. The shuffled protocol's wrong superclasses are drawn per batch from
    ``shuffle_seed``: they do not depend on the run seed or the device.
    """

    def __init__(self, run_dir: Path, case: Optional[Case], hierarchy: Optional[ClassTree],
                 class_names: Sequence[str], inferred_rule: str = "softmax", metrics_protocol: str = "inferred",
                 shuffle_seed: int = 0, masked: Optional[dict[str, Sequence[int]]] = None) -> None:
        self.run_dir, self.case, self.hierarchy, self.class_names = Path(run_dir), case, hierarchy, list(class_names)
        self.table = case.table if case is not None else (
            hierarchy.table(hierarchy.level_names[0]) if hierarchy is not None else None)
        self.masked = dict(masked or {})  # name (a case) -> the table whose true superclass masks the logits
        self.inferred_rule, self.metrics_protocol, self.shuffle_seed = inferred_rule, metrics_protocol, shuffle_seed
        self.record: dict = {}

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        k = len(self.class_names)
        dense = k <= DENSE_CONFUSION_LIMIT  # else each protocol's (label, prediction) pairs, made sparse at the end
        confusions: dict[str, torch.Tensor] = {}
        mistakes, scored = MistakeMetrics(self.hierarchy, k), False  # the metrics protocol's, batch by batch
        fed = self.case.table if self.case is not None else None
        for batch_idx, (images, superclass, label) in enumerate(eval_batches(trainer, pl_module, "test")):
            generator = torch.Generator().manual_seed(self.shuffle_seed * 1_000_003 + batch_idx)
            h, extras = pl_module.features(images)
            scores = protocol_scores(pl_module.net, h, extras, superclass, fed, self.inferred_rule, generator)
            # The oracle logits (the plain logits without a block), masked to the true superclass of each case.
            scores.update({f"masked/{name}": masked_scores(scores["oracle"], label, table)
                           for name, table in self.masked.items()})
            for protocol, score in scores.items():
                if dense:
                    counts = confusion_counts(score.argmax(1), label, k)
                    confusions[protocol] = confusions[protocol] + counts if protocol in confusions else counts
                else:
                    confusions.setdefault(protocol, []).append((label.cpu(), score.argmax(1).cpu()))
            if self.metrics_protocol in scores:
                mistakes.update(scores[self.metrics_protocol], label)
                scored = True
        confusions = {p: c.numpy() if dense else
                      sparse_confusion(torch.cat([t for t, _ in c]), torch.cat([q for _, q in c]), k)
                      for p, c in confusions.items()}
        matrices = {p: confusions.get(p) for p in PROTOCOLS}
        vectors = pl_module.net.class_vectors().detach().float().cpu().numpy()
        # The learned distances in the model's own metric: arccos for an arccos proxy head (ProxyDR's code).
        distance = getattr(pl_module.method, "distance", "euc")
        self.record = evaluation_record(matrices, self.table, self.metrics_protocol, vectors, self.hierarchy, distance)
        self.record["test_error_masked"] = {name: error(confusions[f"masked/{name}"]) for name in self.masked}
        # metrics_protocol: the predictions behind top{k}_acc, ece and the mistake metrics (test_acc is the oracle's)
        self.record.update(eval_hierarchy=self.table, inferred_rule=self.inferred_rule,
                           metrics_protocol=self.metrics_protocol)
        if scored:
            self.record.update(mistakes.compute())
        for key, value in self.record.items():
            if isinstance(value, float):
                pl_module.log(f"test/{key.removeprefix('test_')}", value)
        for name, value in self.record["test_error_masked"].items():
            pl_module.log(f"test/error_masked_{name}", value)
        protocol = self.metrics_protocol
        if matrices[protocol] is not None and dense:  # no figure of 10,000 × 10,000 cells
            figure = confusion_figure(matrices[protocol], self.table, self.class_names,
                                      f"test, {protocol} protocol: error {self.record[f'test_error_{protocol}']:.2f} %")
            if trainer.is_global_zero:  # every rank computes it (the whole test set); one writes it
                figure.savefig(self.run_dir / "confusion.png", dpi=120)
            add_figure = getattr(getattr(trainer.logger, "experiment", None), "add_figure", None)
            if add_figure is not None:
                add_figure("test/confusion", figure, global_step=trainer.global_step, close=False)


class DiscoveryInputs(pl.Callback):
    """At the end of training, ``hierarchy.npz`` for ``python -m src.discover``: the validation confusion
    (hard and soft) under the inferred protocol and the class vectors, from validation data and weights only.

    The inferred protocol, not the oracle: feeding the true superclass would write the current superclasses
    into the confusion matrix that is meant to find new ones. Without validation data the confusions are zero.
    """

    def __init__(self, path: Path, dataset: str, case: Optional[Case], class_names: Sequence[str],
                 inferred_rule: str = "softmax", cases: Optional[Mapping[str, Case]] = None) -> None:
        self.path, self.dataset, self.case = Path(path), dataset, "baseline" if case is None else case.name
        self.superclasses = None if case is None else case.table
        self.class_names, self.inferred_rule = list(class_names), inferred_rule
        self.cases = {name: c.table for name, c in (cases or {}).items()}  # the named cases discovery compares with

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        k = len(self.class_names)
        if k > DENSE_CONFUSION_LIMIT:  # two dense (K, K) confusions: 1.2 GB at 10,000 classes
            log.warning("hierarchy.npz not written: discovery clusters a dense confusion, and %d classes are more "
                        "than %d", k, DENSE_CONFUSION_LIMIT)
            return
        hard = torch.zeros(k, k, dtype=torch.long)
        soft = torch.zeros(k, k, dtype=torch.float32)
        for images, superclass, label in eval_batches(trainer, pl_module, "val"):
            h, extras = pl_module.features(images)
            scores = protocol_scores(pl_module.net, h, extras, superclass, self.superclasses, self.inferred_rule)
            inferred = scores["inferred"].float()
            hard += confusion_counts(inferred.argmax(1), label, k)
            soft.index_add_(0, label.cpu(), inferred.softmax(1).cpu())
        protocol = f"inferred ({self.inferred_rule})" if pl_module.has_auxiliary else "plain"
        write_atomic(self.path, lambda f: np.savez(
            f, val_confusion=hard.numpy(), val_soft_confusion=soft.numpy(),
            class_vectors=pl_module.net.class_vectors().detach().float().cpu().numpy(),
            class_names=np.array([str(c) for c in self.class_names]),
            superclasses=np.array(self.superclasses if self.superclasses is not None else [], dtype=np.int64),
            dataset=np.array(self.dataset), case=np.array(self.case), protocol=np.array(protocol),
            case_names=np.array(list(self.cases), dtype=str),
            case_tables=np.array(list(self.cases.values()), dtype=np.int64).reshape(len(self.cases), k)),
            binary=True)
