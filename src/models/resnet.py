"""Pre-activation ResNet ("Identity Mappings in Deep Residual Networks", He et al. 2016).

Depth is data: depth = 6n + 4 with n pre-activation basic blocks per stage, three stages of width
16k/32k/64k (k = widen factor). The paper uses 10 layers (n = 1) on MNIST and 28 (n = 4) on SVHN
and CIFAR-10. The auxiliary block sits at the seam between ``forward_features`` and ``forward_head``:
after the last stage (``position=3``, the paper's place, on the pooled features) or after stage 1 or 2.
Methods add parts with ``add_tap``: a module fed one stage's output map, whose result is returned in
``NetOutput.extras`` (src/models/method.py).
"""
from typing import Optional

import torch
from torch import nn
import torch.nn.functional as F

from src.run.errors import ConfigError
from src.models.auxiliary import AuxiliaryBlock
from src.models.method import NetOutput

STAGES = (1, 2, 3)


class PreActBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # Pre-activation: the projection shortcut takes the activated input (He et al. 2016, fig. 4e).
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


def blocks_per_stage(depth: int) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise ConfigError(f"model.depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...; set it with depth=N), got {depth!r}")
    return (depth - 4) // 6


def he_init(module: nn.Module) -> None:
    """He initialisation (paper, section 4) of every conv, linear and BatchNorm layer in ``module``."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out" if isinstance(m, nn.Conv2d) else "fan_in",
                                    nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class PreActResNet(nn.Module):
    """Pre-activation ResNet with an optional auxiliary block (HAL).

    ``num_superclasses=None`` gives the baseline, which has no auxiliary block. ``position`` (1, 2, 3) is the
    stage after which the block sits; 3 is the paper's place, between the pooled features and the classifier.
    """

    def __init__(
        self,
        depth: int,
        num_classes: int,
        in_channels: int = 3,
        widen_factor: int = 1,
        num_superclasses: Optional[int] = None,
        position: int = 3,
    ) -> None:
        super().__init__()
        n = blocks_per_stage(depth)
        if isinstance(widen_factor, bool) or not isinstance(widen_factor, int) or widen_factor < 1:
            raise ConfigError(f"model.widen_factor must be an integer >= 1, got {widen_factor!r}")
        if position not in STAGES:
            raise ConfigError(f"method.position must be 1, 2 or 3 (the stage the auxiliary block follows), got {position!r}")
        self.widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.depth, self.blocks_per_stage, self.widen_factor = depth, n, widen_factor
        self.position = position if num_superclasses else 3
        self.conv = nn.Conv2d(in_channels, self.widths[0], 3, 1, 1, bias=False)
        self.stages = nn.ModuleList()
        in_planes = self.widths[0]
        for stage, planes in enumerate(self.widths[1:]):
            self.stages.append(nn.Sequential(*[
                PreActBlock(in_planes if b == 0 else planes, planes, stride=2 if stage > 0 and b == 0 else 1)
                for b in range(n)]))
            in_planes = planes
        self.bn = nn.BatchNorm2d(in_planes)
        self.num_features = in_planes
        self.auxiliary = AuxiliaryBlock(self.widths[self.position], num_superclasses) if num_superclasses else None
        self.fc = nn.Linear(in_planes, num_classes)
        he_init(self)
        self.taps = nn.ModuleDict()   # method parts (src/models/method.py), built after the init above
        self.tap_stage: dict[str, int] = {}

    def add_tap(self, name: str, stage: int, module: nn.Module) -> None:
        """Feed ``module`` the output map of ``stage`` (1-3); its result is ``NetOutput.extras[name]``."""
        if stage not in STAGES:
            raise ConfigError(f"{name}: stage must be 1, 2 or 3, got {stage!r}")
        self.taps[name] = module
        self.tap_stage[name] = stage

    def stage_channels(self, stage: int) -> int:
        return self.widths[stage]

    def class_vectors(self) -> torch.Tensor:
        """The class representatives (K, l): the classifier's rows, or a proxy head's proxies."""
        # not getattr(fc, "class_vectors", fc.weight): its default is evaluated first, and a proxy head has no weight
        return self.fc.class_vectors if hasattr(self.fc, "class_vectors") else self.fc.weight

    def _stages(self, h: torch.Tensor, stages, extras: dict) -> torch.Tensor:
        for k in stages:
            h = self.stages[k - 1](h)
            for name, stage in self.tap_stage.items():
                if stage == k:
                    extras[name] = self.taps[name](h)
        return h

    def _pool(self, h: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(F.relu(self.bn(h)), 1), 1)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Everything before the auxiliary block: its input (the pooled features y^{N-2} (B, l) at position 3,
        else the stage's output map) and the extras of the taps on the stages run so far."""
        extras: dict = {}
        h = self._stages(self.conv(x), range(1, self.position + 1), extras)
        return (self._pool(h) if self.position == 3 else h), extras

    def forward_head(self, h: torch.Tensor, x_star: Optional[torch.Tensor] = None,
                     extras: Optional[dict] = None) -> NetOutput:
        """The auxiliary block (if any) on ``h``, the remaining stages and the classifier."""
        extras = dict(extras or {})
        a = z = None
        if self.auxiliary is not None:
            if x_star is None:
                raise ValueError("this network has an auxiliary block: pass the one-hot superclass x_star")
            z = self.auxiliary.project(h)
            a = self.auxiliary.score(z, x_star)
            h = self.auxiliary.scale(h, a)
        if self.position < 3:
            h = self._pool(self._stages(h, range(self.position + 1, 4), extras))
        return NetOutput(self.fc(h), a, z, extras)

    def forward(self, x: torch.Tensor, x_star: Optional[torch.Tensor] = None) -> NetOutput:
        h, extras = self.forward_features(x)
        return self.forward_head(h, x_star, extras)
