"""The one LightningModule: cross-entropy, SGD + cosine annealing (paper section 4), per-epoch logging.

The superclass x* is the one-hot of the batch's superclass index. At test time the true superclass is
fed (the paper's "oracle" protocol), which gives ``test_error``; the test hooks also run the
"inferred" and "shuffled" protocols and the hierarchy metrics of ``src.evaluation``.
"""
import math
from collections.abc import Callable, Sequence
from typing import Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from src.errors import DivergenceError
from src.evaluation import PROTOCOLS, SoftConfusion, confusion_figure, evaluation_record, protocol_scores

STAGES = ("train", "val", "test")


def _by_stage(make) -> nn.ModuleDict:
    # ModuleDict keys cannot be "train" (an nn.Module method), hence the suffix.
    return nn.ModuleDict({f"{s}_": make() for s in STAGES})


class HALModule(pl.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        num_classes: int,
        num_superclasses: int = 0,
        lr_min: float = 0.0,
        channels_last: bool = False,
        compile: bool = False,
        hierarchy: Optional[Sequence[int]] = None,
        class_names: Sequence[str] = (),
        inferred_rule: str = "softmax",
        metrics_protocol: str = "inferred",
        shuffle_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer"])
        self.net = net
        self.optimizer = optimizer
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        # Compile the bound method rather than wrap the net: parameter names and checkpoints stay the same.
        self.forward_features = torch.compile(net.forward_features) if compile else net.forward_features
        self.loss = _by_stage(lambda: MeanMetric(nan_strategy="disable"))
        # No input validation and no NaN check: both read values back to the host, a sync every step.
        self.acc = _by_stage(lambda: MulticlassAccuracy(num_classes, average="micro", validate_args=False))
        # Auxiliary-score statistics per superclass: sum a, sum a², count; and how often z_j ∈ (0, 1).
        s = max(num_superclasses, 1)
        self.register_buffer("aux_stats", torch.zeros(len(STAGES), 3, s), persistent=False)
        self.register_buffer("z_inside", torch.zeros(len(STAGES), 2), persistent=False)
        # Test protocols and hierarchy metrics (README, "Beyond the paper"). ``val_protocols`` is off
        # while fitting; train() turns it on for one validation pass that feeds superclass discovery.
        self.confusion = nn.ModuleDict({f"test_{p}": MulticlassConfusionMatrix(num_classes, validate_args=False)
                                        for p in PROTOCOLS})
        self.confusion["val_inferred"] = MulticlassConfusionMatrix(num_classes, validate_args=False)
        self.val_soft_confusion = SoftConfusion(num_classes)
        self.val_protocols = False
        self.val_evaluation: dict = {}
        self.test_evaluation: dict = {}
        self.confusion_figure = None

    @property
    def has_auxiliary(self) -> bool:
        return getattr(self.net, "auxiliary", None) is not None

    def one_hot(self, superclass: torch.Tensor) -> Optional[torch.Tensor]:
        if not self.has_auxiliary:
            return None
        return F.one_hot(superclass, self.hparams.num_superclasses).to(torch.float32)

    def forward(self, images: torch.Tensor, superclass: torch.Tensor):
        """Logits and auxiliary score a (None for the baseline) with the given superclass fed as x*."""
        return self.net(images, self.one_hot(superclass))

    def _step(self, batch, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss (oracle protocol: the batch's true superclass is x*) and the features y^{N-2}."""
        images, superclass, label = batch
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        y = self.forward_features(images)
        x_star = self.one_hot(superclass)
        logits, a = self.net.forward_head(y, x_star)
        loss = F.cross_entropy(logits, label)
        self.loss[stage + "_"].update(loss.detach(), weight=len(label))
        self.acc[stage + "_"].update(logits.detach(), label)
        if a is not None:
            self._update_aux_stats(stage, y.detach(), a.detach(), superclass)
        return loss, y

    def _update_aux_stats(self, stage: str, y: torch.Tensor, a: torch.Tensor, superclass: torch.Tensor) -> None:
        i = STAGES.index(stage)
        a = a.squeeze(1).float()
        self.aux_stats[i, 0].index_add_(0, superclass, a)
        self.aux_stats[i, 1].index_add_(0, superclass, a * a)
        self.aux_stats[i, 2].index_add_(0, superclass, torch.ones_like(a))
        # a depends on x* only through z_j of the fed superclass, and only while z_j ∈ (0, 1)
        # (equation 3): outside it the block ignores the hint. Track how often that happens.
        z = self.net.auxiliary.project(y).float()
        self.z_inside[i, 0] += ((z > 0) & (z < 1)).sum()
        self.z_inside[i, 1] += z.numel()

    def _log_epoch(self, stage: str) -> None:
        self.log(f"{stage}/loss", self.loss[stage + "_"].compute(), prog_bar=stage == "val")
        self.log(f"{stage}/error", 100 * (1 - self.acc[stage + "_"].compute()), prog_bar=stage == "val")
        self.loss[stage + "_"].reset()
        self.acc[stage + "_"].reset()
        if self.has_auxiliary:
            i = STAGES.index(stage)
            total, sq, count = self.aux_stats[i]
            mean = total / count.clamp(min=1)
            std = (sq / count.clamp(min=1) - mean**2).clamp(min=0).sqrt()
            for j in range(len(mean)):
                self.log(f"{stage}_aux/score_mean_s{j}", mean[j])
                self.log(f"{stage}_aux/score_std_s{j}", std[j])
            inside, numel = self.z_inside[i]
            self.log(f"{stage}_aux/z_in_unit_interval", inside / numel.clamp(min=1))
            self.aux_stats[i].zero_()
            self.z_inside[i].zero_()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch, batch_idx: int) -> None:
        _, y = self._step(batch, "val")
        if self.val_protocols:
            self._update_protocols(y, batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        _, y = self._step(batch, "test")
        self._update_protocols(y, batch, batch_idx, "test")

    def _update_protocols(self, y: torch.Tensor, batch, batch_idx: int, stage: str) -> None:
        """Every protocol's class scores from the features ``y`` of the batch (computed once)."""
        _, superclass, label = batch
        # Seeded per batch: the wrong superclasses do not depend on the run seed or the device.
        generator = torch.Generator().manual_seed(self.hparams.shuffle_seed * 1_000_003 + batch_idx)
        scores = protocol_scores(self.net, y, superclass, self.hparams.hierarchy,
                                 self.hparams.inferred_rule, generator if stage == "test" else None)
        if stage == "val":
            # Validation feeds discovery, so it never uses the true superclass of an image (inferred).
            self.confusion["val_inferred"].update(scores["inferred"].argmax(1), label)
            self.val_soft_confusion.update(scores["inferred"].float().softmax(1), label)
            return
        for protocol, score in scores.items():
            self.confusion[f"test_{protocol}"].update(score.argmax(1), label)

    def _finish_protocols(self, stage: str) -> None:
        if stage == "val":
            self.val_evaluation = {"confusion": self.confusion["val_inferred"].compute().cpu().numpy(),
                                   "soft_confusion": self.val_soft_confusion.compute().cpu().numpy()}
            self.confusion["val_inferred"].reset()
            self.val_soft_confusion.reset()
            return
        confusions = {}
        for p in PROTOCOLS:
            metric = self.confusion[f"test_{p}"]
            confusions[p] = metric.compute().cpu().numpy() if metric.update_called else None
            metric.reset()
        hierarchy, protocol = self.hparams.hierarchy, self.hparams.metrics_protocol
        self.test_evaluation = evaluation_record(confusions, hierarchy, protocol,
                                                 self.net.fc.weight.detach().float().cpu().numpy())
        for key, value in self.test_evaluation.items():
            if isinstance(value, float):
                self.log(f"test/{key.removeprefix('test_')}", value)
        if confusions[protocol] is not None:
            self.confusion_figure = confusion_figure(
                confusions[protocol], hierarchy, self.hparams.class_names,
                f"test, {protocol} protocol: error {self.test_evaluation[f'test_error_{protocol}']:.2f} %")
            add_figure = getattr(getattr(self.logger, "experiment", None), "add_figure", None)
            if add_figure is not None:
                add_figure("test/confusion", self.confusion_figure, global_step=self.global_step, close=False)

    def on_train_epoch_end(self) -> None:
        # One host sync per epoch instead of one per step: a NaN anywhere makes the epoch mean NaN.
        loss = self.loss["train_"].compute()
        if not math.isfinite(loss.item()):
            raise DivergenceError(
                f"training loss became non-finite in epoch {self.current_epoch}; "
                f"lower optimizer.lr (now {self.trainer.optimizers[0].defaults['lr']}) or set trainer.gradient_clip_val")
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")
        if self.val_protocols:
            self._finish_protocols("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
        self._finish_protocols("test")

    def configure_optimizers(self):
        optimizer = self.optimizer(params=self.parameters())
        # Cosine annealing from the max LR to lr_min over the whole run, stepped per batch (SGDR, paper).
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, int(self.trainer.estimated_stepping_batches)), eta_min=self.hparams.lr_min)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
