"""Hierarchy-aware CNN: superclass heads at intermediate stages ("Do Convolutional Neural Networks Learn Class
Hierarchy?", Bilal et al. 2017, arXiv:1710.06501; seeds/003).

The paper finds that early layers separate the high-level groups within a few epochs, and adds branches that
predict coarser groups at intermediate layers (it converges faster and overfits less). Here, for each stage
k in ``stages``, a linear superclass classifier reads the globally average-pooled stage-k output map::

    u_k = W_k · GAP(h_k) + b_k                       (B, S)
    L   = CE(z, y) + λ · Σ_k CE(u_k, s)              z: main logits, y: class, s: superclass

The heads are training-only; inference uses the main head.
"""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from src.run.errors import ConfigError
from src.models.method import Method, NetOutput
from src.models.resnet import STAGES, he_init


def check_stages(stages: Sequence[int]) -> tuple[int, ...]:
    # a YAML list arrives as an omegaconf ListConfig, so accept any iterable; a bare int is one stage
    stages = (stages,) if isinstance(stages, int) else tuple(stages)
    if not stages:
        raise ConfigError("method.stages must name at least one stage (1, 2 or 3), got an empty list")
    bad = [k for k in stages if isinstance(k, bool) or k not in STAGES]
    if bad:
        raise ConfigError(f"method.stages must be stages 1, 2 or 3, got {list(stages)}")
    if len(set(stages)) != len(stages):
        raise ConfigError(f"method.stages must not repeat a stage, got {list(stages)}")
    return stages


class SuperclassHead(nn.Sequential):
    """GAP of a stage's output map → linear to the superclasses."""

    def __init__(self, channels: int, num_superclasses: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_superclasses))
        he_init(self)


class SuperclassHeads(Method):
    """Plain network plus a superclass classifier after each of ``stages``."""

    auxiliary = False
    needs_superclasses = True

    def __init__(self, name: str = "heads", position: int = 3, stages: Sequence[int] = (1, 2),
                 weight: float = 1.0) -> None:
        super().__init__(name, position)
        self.stages, self.weight = check_stages(stages), weight

    def attach(self, net: nn.Module, num_classes: int, num_superclasses: int) -> None:
        for k in self.stages:
            net.add_tap(f"superclass{k}", k, SuperclassHead(net.stage_channels(k), num_superclasses))
        self.superclass_taps = tuple(f"superclass{k}" for k in sorted(self.stages))

    def loss(self, output: NetOutput, label: torch.Tensor, superclass: torch.Tensor) -> torch.Tensor:
        coarse = sum(F.cross_entropy(output.extras[name], superclass) for name in self.superclass_taps)
        return F.cross_entropy(output.logits, label) + self.weight * coarse


class HALHeads(SuperclassHeads):
    """Superclass heads with HAL's auxiliary block on the main path."""

    auxiliary = True

    def __init__(self, name: str = "hal_heads", position: int = 3, stages: Sequence[int] = (1, 2),
                 weight: float = 1.0) -> None:
        super().__init__(name, position, stages, weight)
