"""Pre-activation ResNet ("Identity Mappings in Deep Residual Networks", He et al. 2016).

Depth is data: depth = 6n + 4 with n pre-activation basic blocks per stage, three stages of width
16k/32k/64k (k = widen factor). The paper uses 10 layers (n = 1) on MNIST and 28 (n = 4) on SVHN
and CIFAR-10. ``forward_features`` ends at the last residual block; the auxiliary block sits between
it and ``forward_head``.
"""
from typing import Optional

import torch
from torch import nn
import torch.nn.functional as F

from src.errors import ConfigError
from src.models.auxiliary import AuxiliaryBlock


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
    if depth < 10 or (depth - 4) % 6:
        raise ConfigError(f"model.depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
    return (depth - 4) // 6


class PreActResNet(nn.Module):
    """Pre-activation ResNet with an optional auxiliary block (HAL) before the classifier.

    ``num_superclasses=None`` gives the baseline, which has no auxiliary block.
    """

    def __init__(
        self,
        depth: int,
        num_classes: int,
        in_channels: int = 3,
        widen_factor: int = 1,
        num_superclasses: Optional[int] = None,
    ) -> None:
        super().__init__()
        n = blocks_per_stage(depth)
        if widen_factor < 1:
            raise ConfigError(f"model.widen_factor must be >= 1, got {widen_factor}")
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.depth = depth
        self.conv = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        layers, in_planes = [], widths[0]
        for stage, planes in enumerate(widths[1:]):
            for b in range(n):
                layers.append(PreActBlock(in_planes, planes, stride=2 if stage > 0 and b == 0 else 1))
                in_planes = planes
        self.blocks = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(in_planes)
        self.num_features = in_planes
        self.auxiliary = AuxiliaryBlock(in_planes, num_superclasses) if num_superclasses else None
        self.fc = nn.Linear(in_planes, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # He initialisation (paper, section 4).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out" if isinstance(m, nn.Conv2d) else "fan_in",
                                        nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """y^{N-2}: output of the last residual block, pooled to (B, l)."""
        x = self.blocks(self.conv(x))
        x = F.relu(self.bn(x))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward_head(
        self, y: torch.Tensor, x_star: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Logits from features; with the auxiliary block, also the auxiliary score a (B, 1)."""
        if self.auxiliary is None:
            return self.fc(y), None
        if x_star is None:
            raise ValueError("this network has an auxiliary block: pass the one-hot superclass x_star")
        y, a = self.auxiliary(y, x_star)
        return self.fc(y), a

    def forward(
        self, x: torch.Tensor, x_star: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return self.forward_head(self.forward_features(x), x_star)
