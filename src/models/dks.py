"""DKS: Deeply-supervised Knowledge Synergy (Sun et al., CVPR 2019; seeds/004), as its official code does it
(GitHub sundw2014/DKS: ``wrn_DKS/resnet.py``, ``wrn_DKS/main.py``, ``wrn_DKS/KL_divergence.py``).

Two auxiliary branches on the pre-activation ResNet (widths 16k/32k/64k, n blocks per stage):
  branch1, after stage 1: n blocks → 32k (first stride 2), max(1, n//2) blocks → 64k (first stride 2)
  branch2, after stage 2: n blocks → 128k (first stride 2; the code's ``widths[2]*2``)
each ending in BN → ReLU → global average pool → linear to K classes. The code has n//2 blocks in branch1's
second group, which is 0 at depth 10 (n = 1) and breaks the shapes, hence max(1, n//2); its fixed 8×8 pool
assumes 32×32 inputs, hence the adaptive pool. The branches are training-only: inference uses the main head,
so its cost equals the baseline's.

With z_1, z_2, z_3 = branch1, branch2, main logits and y the label, the loss (``main.py``, every weight 1)::

    L = Σ_i CE(z_i, y) + λ · Σ_{i≠j} KL(p̃_j ‖ p̃_i),   p_j = softmax(z_j / T).detach(),  p_i = softmax(z_i / T)
    p̃ = (p + ε) / (1 + C·ε),  ε = 1e-8,   KL(p ‖ q) = mean_batch Σ_c p_c log(p_c / q_c)

over all 6 ordered pairs: each head is pulled towards every other head's (detached) prediction. The code
has no temperature (T = 1) and hence no T² factor; with T ≠ 1 we divide the logits by T and do not rescale.
"""
import torch
import torch.nn.functional as F
from torch import nn

from src.models.method import Method, NetOutput
from src.models.resnet import PreActBlock, he_init

EPSILON = 1e-8  # KL_divergence.py: probabilities are smoothed so log(p/q) stays finite


def smoothed_softmax(z: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    p = F.softmax(z / temperature, dim=1)
    return (p + EPSILON) / (1.0 + z.shape[1] * EPSILON)


def kl_divergence(target_logits: torch.Tensor, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(p̃_target ‖ p̃), mean over the batch. As ``KL_divergence(o2.detach(), o)``: the target side is detached,
    so only ``logits`` receives a gradient."""
    p = smoothed_softmax(target_logits.detach(), temperature)
    q = smoothed_softmax(logits, temperature)
    return (p * torch.log(p / q)).sum(1).mean()


def synergy_loss(logits: list[torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """Σ_{i≠j} KL(p̃_j.detach() ‖ p̃_i) over all ordered pairs of heads (DKS's knowledge synergy)."""
    return sum(kl_divergence(z_j, z_i, temperature)
               for i, z_i in enumerate(logits) for j, z_j in enumerate(logits) if i != j)


def _group(in_planes: int, planes: int, count: int) -> list[nn.Module]:
    return [PreActBlock(in_planes if b == 0 else planes, planes, stride=2 if b == 0 else 1) for b in range(count)]


class Branch(nn.Sequential):
    """Residual groups, then BN → ReLU → global average pool → linear (the main head's ending)."""

    def __init__(self, groups: list[nn.Module], planes: int, num_classes: int) -> None:
        super().__init__(*groups, nn.BatchNorm2d(planes), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(planes, num_classes))
        he_init(self)


def dks_branches(c1: int, c2: int, c3: int, n: int, num_classes: int) -> tuple[Branch, Branch]:
    """The two branches for stage widths c1, c2, c3 (16k, 32k, 64k) and n blocks per stage."""
    branch1 = Branch(_group(c1, c2, n) + _group(c2, c3, max(1, n // 2)), c3, num_classes)
    branch2 = Branch(_group(c2, 2 * c3, n), 2 * c3, num_classes)
    return branch1, branch2


class DKS(Method):
    """Plain network plus the two DKS branches; CE on every head plus ``weight`` × the synergy loss."""

    auxiliary = False
    heads = ("branch1", "branch2")

    def __init__(self, name: str = "dks", position: int = 3, weight: float = 1.0, temperature: float = 1.0) -> None:
        super().__init__(name, position)
        self.weight, self.temperature = weight, temperature

    def attach(self, net: nn.Module, num_classes: int, num_superclasses: int) -> None:
        if hasattr(net, "dks_branches"):  # a backbone that builds its own (src/models/torchvision_resnet.py)
            (stage1, branch1), (stage2, branch2) = sorted(net.dks_branches(num_classes).items())
        else:
            branch1, branch2 = dks_branches(*(net.stage_channels(k) for k in (1, 2, 3)), net.blocks_per_stage,
                                            num_classes)
            stage1, stage2 = 1, 2
        net.add_tap("branch1", stage1, branch1)
        net.add_tap("branch2", stage2, branch2)
        self.class_taps = self.heads

    def loss(self, output: NetOutput, label: torch.Tensor, superclass: torch.Tensor) -> torch.Tensor:
        logits = [output.extras[name] for name in self.heads] + [output.logits]  # shallow first, as main.py
        ce = sum(F.cross_entropy(z, label) for z in logits)
        return ce + self.weight * synergy_loss(logits, self.temperature)


class HALDKS(DKS):
    """DKS with HAL's auxiliary block on the main path (fed the true superclass)."""

    auxiliary = True
    needs_superclasses = True

    def __init__(self, name: str = "hal_dks", position: int = 3, weight: float = 1.0,
                 temperature: float = 1.0) -> None:
        super().__init__(name, position, weight, temperature)
