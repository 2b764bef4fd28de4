"""ImageNet ResNets from ``torchvision.models`` (``model=resnet18`` / ``model=resnet50``) behind the seam of
``PreActResNet``: ``forward_features`` / ``forward_head``, ``NetOutput``, ``add_tap`` at the stages.

Stages are torchvision's ``layer1`` … ``layer4``. HAL's auxiliary block sits after stage ``position`` (default 4,
the paper's place: between the pooled output of the last residual block and the classifier); before the last
stage it scales the whole map (``AuxiliaryBlock``). The stem (conv 7×7 stride 2, BN, ReLU, max-pool) and the
blocks are torchvision's own, post-activation, so the pooled features come straight from ``layer4`` (no final
BN/ReLU as in the pre-activation net). The classifier ``fc`` is always new (``num_classes`` outputs).

``weights`` (``model.weights``, e.g. ``IMAGENET1K_V1``) loads torchvision's published weights through
torchvision's own mechanism (the weights enum's ``get_state_dict``: ``torch.hub`` downloads into its cache, or
reads the file already there). Offline without the file: one line naming the file to place. A one-channel input
(MNIST, digits) with weights sums the stem's RGB filters (timm's ``adapt_input_conv``).

DKS (``dks_branches``): the official repository (GitHub sundw2014/DKS @ 285354171eb2dc2aea19436bed9517096308f915)
has no ImageNet training code: ``imagenet/main.py`` only evaluates its released checkpoints in plain
torchvision models (branches dropped). Its CIFAR code (``wrn_DKS/resnet.py``) puts a branch after every stage
but the last, each a fresh copy of the remaining stages (the first branch's deeper group with half the blocks,
the last branch's group twice as wide), ending in pool + linear. Here the same rule on torchvision's stages
2 and 3 (conv3_x and conv4_x): branch1 after layer2 = layer3 copy + layer4 copy with max(1, n₄//2) blocks,
branch2 after layer3 = layer4 copy with twice the width (docs/configuration.md, "Backbones").
"""
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import Bottleneck

from src.run.errors import ConfigError, UserError
from src.models.auxiliary import AuxiliaryBlock
from src.models.method import NetOutput
from src.models.resnet import he_init

STAGES = (1, 2, 3, 4)
ARCHS = ("resnet18", "resnet50")


class WeightsUnavailable(UserError):
    """torchvision's weights are neither in the torch.hub cache nor downloadable (offline)."""


def weights_file(weights) -> Path:
    """Where ``torch.hub`` keeps (and looks for) a torchvision weights file: <hub dir>/checkpoints/<name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def resolve_weights(arch: str, name: Optional[str]):
    """The weights enum member ``name`` of ``arch`` (None: none)."""
    if name is None:
        return None
    enum = torchvision.models.get_model_weights(arch)
    names = [w.name for w in enum]
    if name not in names:
        raise ConfigError(f"model.weights={name} is not a weight of {arch}; choose one of {names} or null")
    return enum[name]


def load_state_dict(weights) -> dict:
    """torchvision's ``weights.get_state_dict``; offline and not cached → ``WeightsUnavailable`` in one line."""
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a hash mismatch is a RuntimeError
        reason = " ".join(str(getattr(error, "reason", error)).split())
        raise WeightsUnavailable(
            f"model.weights={weights.name}: cannot download {weights.url} ({reason}); offline, place that file at "
            f"{weights_file(weights)} (torch.hub's cache: $TORCH_HOME/hub/checkpoints)") from None


class TorchvisionResNet(nn.Module):
    """``torchvision.models.<arch>`` with the seam of ``PreActResNet`` and HAL's block after stage ``position``."""

    stage_numbers = STAGES

    def __init__(self, arch: str, num_classes: int, in_channels: int = 3, weights: Optional[str] = None,
                 num_superclasses: Optional[int] = None, position: int = 4) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ConfigError(f"model.arch must be one of {list(ARCHS)}, got {arch!r}")
        if position not in STAGES:
            raise ConfigError(f"method.position must be 1, 2, 3 or 4 on {arch} (the stage the auxiliary block "
                              f"follows), got {position!r}")
        enum = resolve_weights(arch, weights)
        net = torchvision.models.get_model(arch, weights=None)
        if enum is not None:
            net.load_state_dict(load_state_dict(enum))
        self.arch, self.weights = arch, weights
        if in_channels != 3:
            conv = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            if enum is not None:
                if in_channels != 1:
                    raise ConfigError(f"model.weights={weights} needs 1 or 3 input channels, the data have {in_channels}")
                conv.weight.data.copy_(net.conv1.weight.data.sum(1, keepdim=True))
            else:
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # torchvision's init
            net.conv1 = conv
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.block = type(net.layer1[0])
        self.blocks = [len(layer) for layer in self.stages]
        self.widths = [64] + [self._out_channels(layer) for layer in self.stages]
        self.num_features = self.widths[4]
        self.position = position if num_superclasses else 4
        self.auxiliary = AuxiliaryBlock(self.widths[self.position], num_superclasses) if num_superclasses else None
        if self.auxiliary is not None:
            he_init(self.auxiliary)  # as PreActResNet's block
        self.fc = nn.Linear(self.num_features, num_classes)  # torchvision's default Linear init
        self.taps = nn.ModuleDict()
        self.tap_stage: dict[str, int] = {}

    @staticmethod
    def _out_channels(layer: nn.Sequential) -> int:
        last = layer[-1]
        return (last.bn3 if isinstance(last, Bottleneck) else last.bn2).num_features

    def add_tap(self, name: str, stage: int, module: nn.Module) -> None:
        """Feed ``module`` the output map of ``stage`` (1-4); its result is ``NetOutput.extras[name]``."""
        if stage not in STAGES:
            raise ConfigError(f"{name}: stage must be 1, 2, 3 or 4, got {stage!r}")
        self.taps[name] = module
        self.tap_stage[name] = stage

    def stage_channels(self, stage: int) -> int:
        return self.widths[stage]

    def class_vectors(self) -> torch.Tensor:
        """The class representatives (K, l): the classifier's rows, or a proxy head's proxies."""
        return self.fc.class_vectors if hasattr(self.fc, "class_vectors") else self.fc.weight

    def dks_branches(self, num_classes: int) -> dict[int, nn.Module]:
        """DKS's two branches by the stage they read (module docstring)."""
        block, (_, _, n3, n4) = self.block, self.blocks
        c2, c3, c4 = self.widths[2:5]
        p3, p4 = c3 // block.expansion, c4 // block.expansion  # the blocks' inner widths
        branch1 = _branch([_layer(block, c2, p3, n3), _layer(block, c3, p4, max(1, n4 // 2))], c4, num_classes)
        branch2 = _branch([_layer(block, c3, 2 * p4, n4)], 2 * c4, num_classes)
        return {2: branch1, 3: branch2}

    def _stages(self, h: torch.Tensor, stages, extras: dict) -> torch.Tensor:
        for k in stages:
            h = self.stages[k - 1](h)
            for name, stage in self.tap_stage.items():
                if stage == k:
                    extras[name] = self.taps[name](h)
        return h

    @staticmethod
    def _pool(h: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Everything before the auxiliary block: the pooled layer4 output (B, l) at position 4, else the map of
        stage ``position``; and the extras of the taps on the stages run so far."""
        extras: dict = {}
        h = self._stages(self.stem(x), range(1, self.position + 1), extras)
        return (self._pool(h) if self.position == 4 else h), extras

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
        if self.position < 4:
            h = self._pool(self._stages(h, range(self.position + 1, 5), extras))
        return NetOutput(self.fc(h), a, z, extras)

    def forward(self, x: torch.Tensor, x_star: Optional[torch.Tensor] = None) -> NetOutput:
        h, extras = self.forward_features(x)
        return self.forward_head(h, x_star, extras)


def _layer(block: type, in_channels: int, planes: int, count: int) -> nn.Sequential:
    """A torchvision ResNet stage: ``count`` blocks, the first with stride 2 and a 1×1 projection (``_make_layer``)."""
    out = planes * block.expansion
    downsample = nn.Sequential(nn.Conv2d(in_channels, out, 1, 2, bias=False), nn.BatchNorm2d(out))
    return nn.Sequential(block(in_channels, planes, 2, downsample), *[block(out, planes) for _ in range(count - 1)])


def _branch(layers: list[nn.Module], channels: int, num_classes: int) -> nn.Sequential:
    """Stages, then global average pool and a linear classifier (torchvision's ending); torchvision's init."""
    branch = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
    for m in branch.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return branch
