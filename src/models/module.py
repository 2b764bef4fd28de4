"""The one LightningModule: a method's loss, SGD + cosine annealing (paper section 4), per-epoch logging.

The superclass x* is the one-hot of the batch's superclass index, fed to the auxiliary block when the
network has one (the paper's "oracle" protocol: the true superclass, in training and in ``test_error``).
What the network computes and what it is trained on come from the method (src/models/method.py); the
extra evaluation passes (test protocols, test curve, scores for figures and discovery) are callbacks
(src/evaluation/callbacks.py).
"""
from collections.abc import Callable
from typing import Optional

import pytorch_lightning as pl
from pytorch_lightning.utilities import GradClipAlgorithmType
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from src.run.errors import check_divergence
from src.models.method import Method, NetOutput

STAGES = ("train", "val", "test")


def _by_stage(make) -> nn.ModuleDict:
    # ModuleDict keys cannot be "train" (an nn.Module method), hence the suffix.
    return nn.ModuleDict({f"{s}_": make() for s in STAGES})


class HALModule(pl.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        method: Optional[Method] = None,
        num_classes: int = 10,
        tree=None,
        level: Optional[str] = None,
        lr_min: float = 0.0,
        channels_last: bool = False,
        compile: bool = False,
        divergence_factor: float = 10.0,
        lr_factor: float = 1.0,
    ) -> None:
        """``tree`` (a ``src.data.tree.ClassTree``, None for the baseline) and its ``level`` fed to the block as x*:
        the superclass of each class. The tree is resolved once in ``build()`` and handed down.

        ``lr_factor``: what ``build()`` multiplied the LR by (``lr_rule``); the gradient-clipping threshold is divided
        by it, so that a clipped step, LR·clip(g), is that of the loss multiplied by the factor at the shared LR."""
        super().__init__()
        num_superclasses = 0 if tree is None else max(tree.table(level)) + 1
        self.save_hyperparameters({"num_classes": num_classes, "num_superclasses": num_superclasses, "lr_min": lr_min,
                                   "channels_last": channels_last, "compile": compile,
                                   "divergence_factor": divergence_factor, "lr_factor": lr_factor})
        self.tree, self.level = tree, level
        self.net = net
        self.optimizer = optimizer
        self.method = method or Method()
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        # Compile the bound method rather than wrap the net: parameter names and checkpoints stay the same.
        self._forward_features = torch.compile(net.forward_features) if compile else net.forward_features
        self.loss = _by_stage(lambda: MeanMetric(nan_strategy="disable"))
        # No input validation and no NaN check: both read values back to the host, a sync every step.
        self.acc = _by_stage(lambda: MulticlassAccuracy(num_classes, average="micro", validate_args=False))
        # Auxiliary-score statistics per superclass: sum a, sum a², count; and how often z_j ∈ (0, 1).
        s = max(num_superclasses, 1)
        self.register_buffer("aux_stats", torch.zeros(len(STAGES), 3, s), persistent=False)
        self.register_buffer("z_inside", torch.zeros(len(STAGES), 2), persistent=False)
        # Test counts of the method's extra heads (DKS branches, superclass heads): correct, and images seen.
        self.class_taps, self.superclass_taps = tuple(self.method.class_taps), tuple(self.method.superclass_taps)
        self.register_buffer("head_correct", torch.zeros(len(self.class_taps) + len(self.superclass_taps) + 1),
                             persistent=False)
        self.test_heads: dict = {}

    @property
    def has_auxiliary(self) -> bool:
        return getattr(self.net, "auxiliary", None) is not None

    def one_hot(self, superclass: torch.Tensor) -> Optional[torch.Tensor]:
        if not self.has_auxiliary:
            return None
        return F.one_hot(superclass, self.hparams.num_superclasses).to(torch.float32)

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The network up to the auxiliary block (``PreActResNet.forward_features``), on a normalised batch."""
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self._forward_features(images)

    def forward(self, images: torch.Tensor, superclass: torch.Tensor) -> NetOutput:
        """The network's output with the given superclass fed as x* (ignored without an auxiliary block)."""
        h, extras = self.features(images)
        return self.net.forward_head(h, self.one_hot(superclass), extras)

    def _step(self, batch, stage: str) -> tuple[torch.Tensor, NetOutput]:
        images, superclass, label = batch
        output = self(images, superclass)
        # Training minimises the method's loss; validation and test report the main head's cross-entropy,
        # comparable across methods.
        loss = self.method.loss(output, label, superclass) if stage == "train" else \
            F.cross_entropy(output.logits, label)
        self.loss[stage + "_"].update(loss.detach(), weight=len(label))
        self.acc[stage + "_"].update(output.logits.detach(), label)
        if output.auxiliary_score is not None:
            self._update_aux_stats(stage, output, superclass)
        return loss, output

    def _update_aux_stats(self, stage: str, output: NetOutput, superclass: torch.Tensor) -> None:
        i = STAGES.index(stage)
        a = output.auxiliary_score.detach().squeeze(1).float()
        self.aux_stats[i, 0].index_add_(0, superclass, a)
        self.aux_stats[i, 1].index_add_(0, superclass, a * a)
        self.aux_stats[i, 2].index_add_(0, superclass, torch.ones_like(a))
        # a depends on x* only through z_j of the fed superclass, and only while z_j ∈ (0, 1)
        # (equation 3): outside it the block ignores the hint. Track how often that happens.
        z = output.auxiliary_projection.detach().float()
        self.z_inside[i, 0] += ((z > 0) & (z < 1)).sum()
        self.z_inside[i, 1] += z.numel()

    def _log_epoch(self, stage: str) -> float:
        """Log the epoch's metrics of ``stage`` and reset them; returns its error %."""
        error = 100 * (1 - self.acc[stage + "_"].compute())
        self.log(f"{stage}/loss", self.loss[stage + "_"].compute(), prog_bar=stage == "val")
        self.log(f"{stage}/error", error, prog_bar=stage == "val")
        self.loss[stage + "_"].reset()
        self.acc[stage + "_"].reset()
        if self.has_auxiliary:
            i = STAGES.index(stage)
            # Summed over DDP ranks (a no-op on one device); the metrics above reduce themselves.
            total, sq, count = self.trainer.strategy.reduce(self.aux_stats[i].clone(), reduce_op="sum")
            z_inside = self.trainer.strategy.reduce(self.z_inside[i].clone(), reduce_op="sum")
            mean = total / count.clamp(min=1)
            std = (sq / count.clamp(min=1) - mean**2).clamp(min=0).sqrt()
            for j in range(len(mean)):
                self.log(f"{stage}_aux/score_mean_s{j}", mean[j])
                self.log(f"{stage}_aux/score_std_s{j}", std[j])
            inside, numel = z_inside
            self.log(f"{stage}_aux/z_in_unit_interval", inside / numel.clamp(min=1))
            self.aux_stats[i].zero_()
            self.z_inside[i].zero_()
        return float(error)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        _, output = self._step(batch, "test")
        _, superclass, label = batch
        heads = [(output.extras[n], label) for n in self.class_taps] + \
                [(output.extras[n], superclass) for n in self.superclass_taps]
        for i, (logits, target) in enumerate(heads):
            self.head_correct[i] += (logits.argmax(1) == target).sum()
        self.head_correct[-1] += len(label)

    def on_train_epoch_end(self) -> None:
        # One host sync per epoch instead of one per step: a NaN anywhere makes the epoch mean NaN.
        check_divergence(self.loss["train_"].compute().item(), self.hparams.num_classes,
                         self.hparams.divergence_factor, self.current_epoch,
                         self.trainer.optimizers[0].defaults["lr"])
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        error = self._log_epoch("test")
        counts = self.trainer.strategy.reduce(self.head_correct.clone(), reduce_op="sum").tolist()
        self.head_correct.zero_()
        n, k = max(counts[-1], 1), len(self.class_taps)
        # Each class head's test error, the main head last; the superclass heads' accuracy.
        if self.class_taps:
            self.test_heads["test_error_heads"] = [100 * (1 - c / n) for c in counts[:k]] + [error]
        if self.superclass_taps:
            self.test_heads["test_superclass_acc_heads"] = {
                name: 100 * c / n for name, c in zip(self.superclass_taps, counts[k:-1])}

    def parameter_counts(self) -> dict[str, int]:
        """Parameters trained, and those left at inference (the method's extra heads dropped)."""
        total = sum(p.numel() for p in self.net.parameters())
        return {"params_train": total, "params_inference": total - sum(p.numel() for p in self.net.taps.parameters())}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if gradient_clip_val is None or self.hparams.lr_factor == 1:
            self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm)
            return
        # clip_gradients refuses a threshold other than the Trainer's; the precision plugin under it takes any
        self.trainer.precision_plugin.clip_gradients(optimizer, gradient_clip_val / self.hparams.lr_factor,
                                                     GradClipAlgorithmType(gradient_clip_algorithm or "norm"))

    def configure_optimizers(self):
        optimizer = self.optimizer(params=self.parameters())
        # Cosine annealing from the max LR to lr_min over the whole run, stepped per batch (SGDR, paper).
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, int(self.trainer.estimated_stepping_batches)), eta_min=self.hparams.lr_min)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
