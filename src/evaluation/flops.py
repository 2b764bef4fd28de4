"""The cost of a training image in FLOPs: a figure that does not depend on the machine or its load.

``train_flops_per_image`` counts, with ``torch.utils.flop_counter.FlopCounterMode``, the floating-point
operations of one training step (forward, the method's loss, backward) on one batch of the training split,
divided by the batch size. FlopCounterMode counts the matrix multiplications and convolutions (2 FLOPs per
multiply-add), which is where a ResNet's cost is; element-wise operations are left out. The count runs on
copies of the network and the method: the run's weights, gradients, BatchNorm statistics and random
state are untouched.
"""
import copy

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from src.data.pipeline import normalize


def train_flops_per_image(module: pl.LightningModule, datamodule: pl.LightningDataModule) -> float:
    """FLOPs of one training step per image (``flops_per_train_image`` in metrics.json)."""
    images, superclass, label = datamodule.splits["train"]
    n = min(datamodule.batch_size, len(label))
    if n == 0:
        raise ValueError("the training split is empty")
    device = module.device
    x = normalize(images[:n].to(device), datamodule.mean.to(device), datamodule.std.to(device))
    superclass, label = superclass[:n].to(device), label[:n].to(device)
    net, method = copy.deepcopy((module.net, module.method))  # one memo: the method's parts stay the net's
    net.train()
    one_hot = F.one_hot(superclass, module.hparams.num_superclasses).float() if module.has_auxiliary else None
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            FlopCounterMode(display=False) as counter:
        h, extras = net.forward_features(x)
        method.loss(net.forward_head(h, one_hot, extras), label, superclass).backward()
    return counter.get_total_flops() / n


class TrainingFlops(pl.Callback):
    """``flops_per_train_image`` of the run, counted once at the end of training."""

    def __init__(self) -> None:
        self.record: dict = {}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record = {"flops_per_train_image": train_flops_per_image(pl_module, trainer.datamodule)}
