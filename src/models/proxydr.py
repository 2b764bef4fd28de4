"""ProxyDR's classifier head (Kim et al., "Inspecting class hierarchies in classification-based metric learning
models"; seeds/002), as the official ``train_cifar100.py`` (GitHub hjk92g/ProxyDR) does it.

Features f (B, l) pass a linear embedding (the code's ``model.fc = Linear(2048, 128)``) and are normalised,
f̂ = f/‖f‖; the learned class proxies w_c (initialised as normalised Gaussians) are normalised, ŵ_c = w_c/‖w_c‖;
cos_c = f̂·ŵ_c. The logits are::

    euc:     z_c = s · (−log(2 − 2·cos_c + 1e-12) / 2)             (= −s·log‖f̂ − ŵ_c‖)
    arccos:  z_c = s · (−log(θ_c + 1e-12)),  θ_c = arccos(0.999999·clip(cos_c, −1, 1))

so softmax(z)_c = d_c^{−s} / Σ_k d_k^{−s}: a ratio of distances (DR), trained with plain cross-entropy.
Float rounding can put cos_c a little above 1, where 2 − 2·cos_c < 0 and its log is NaN: it is clamped at 0
(the code does not clamp; it has the same latent NaN).

The constructor's defaults are the code's command-line defaults; ``conf/method/proxydr.yaml`` chooses otherwise
(``distance: arccos``, ``dynamic_scale: true``), and that is what ``method=proxydr`` trains:
- ``distance="euc"``: the code's default (``--distance euc``) and the distance of every run in its
  ``train_CIFAR100_whole_models.sh``; ``"arccos"`` is the code's other variant (the config's choice).
- ``dynamic_scale=False`` with s = 10: the code fixes ``model.scale = 10`` unless ``--dynamic``. With
  ``dynamic_scale=True`` (the config's choice) s starts at the root (scipy ``fsolve`` from 10) of the code's equation for C classes::

      euc:     ((C−1)/2^{s/2}) · (s+1) · (2−√2)^{s/2} − s + 1 = 0       (C = 10: s₀ ≈ 4.34)
      arccos:  ((C−1)/(π/2)^s) · (s+1) · (π/4)^s − s + 1 = 0            (C = 10: s₀ ≈ 3.92)

  and after every training batch one Adam step (lr 1e-4, the code's ``optimizer0``) on log s minimises
  (AdaCos-style, the code cites 4uiiurz1/pytorch-adacos)::

      r(s) = B_avg · (s+1) · g(θ_med)^s + 1 − s,   loss_sc = r(s)²
      B_avg = (1/B) Σ_i Σ_{c≠y_i} e^{z_ic}  (d_ic^{−s} with the batch's detached distances and current s)
      θ_med = min(π/4, median_i θ_{i,y_i}),   g(θ) = θ (arccos),  g(θ)^s = (2 − 2cos θ + 1e-12)^{s/2} (euc)

  The logits use s detached, so cross-entropy never trains s. Deviation: in the euc case the code writes the
  non-target term as ``euc_sq ** exp(log_s / 2)`` (exponent √s); we use the exponent s/2, which makes it
  e^{z_ic} as the arccos case and AdaCos define B_avg, and which the equation for r uses (we take √s for a typo).
- Not implemented (all off by default in the code): ``--clspri`` (log class prior added to the logits),
  ``--ema`` (proxies moved by an EMA of features), ``--mds_W``/``--CORR`` (proxies fixed from the hierarchy).

log s and the Adam moments are registered buffers, so a checkpoint restores the adapted scale.
"""
import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import fsolve
from torch import nn

from src.run.errors import ConfigError
from src.models.method import Method, NetOutput

DISTANCES = ("euc", "arccos")
FIXED_SCALE = 10.0                              # train_cifar100.py: model.scale = 10
SCALE_LR, BETAS, ADAM_EPS = 1e-4, (0.9, 0.999), 1e-8   # torch.optim.Adam([log_scale], lr=1e-4) defaults


def initial_scale(num_classes: int, distance: str) -> float:
    """The code's s₀ for C classes: the root of its scale equation, ``fsolve`` started from 10."""
    c = float(num_classes)
    if distance == "euc":
        f = lambda s: ((c - 1) / 2 ** (s / 2)) * (s + 1) * (2 - 2 ** 0.5) ** (s / 2) - s + 1
    else:
        f = lambda s: ((c - 1) / (np.pi / 2) ** s) * (s + 1) * (np.pi / 4) ** s - s + 1
    return float(fsolve(f, FIXED_SCALE)[0])


def proxy_logits(cos: torch.Tensor, scale: torch.Tensor | float, distance: str) -> torch.Tensor:
    """z = s · pre_score(cos), the module docstring's two formulas."""
    if distance == "arccos":
        return scale * -torch.log(torch.acos(0.999999 * cos.clamp(-1, 1)) + 1e-12)
    return scale * -torch.log((2 - 2 * cos).clamp(min=0) + 1e-12) / 2


def scale_residual(log_scale: torch.Tensor, cos: torch.Tensor, label: torch.Tensor, distance: str) -> torch.Tensor:
    """loss_sc = r(s)², the module docstring's equation; ``cos`` (B, C) is detached, only log s is live."""
    s_now = log_scale.detach().exp()
    theta = torch.acos(0.999999 * cos.clamp(-1, 1))
    rows = torch.arange(len(label), device=cos.device)
    if distance == "arccos":
        numer = theta ** -s_now
    else:
        numer = (2 - 2 * cos).clamp(min=1e-12) ** (-s_now / 2)  # finite where rounding puts cos at or above 1
    non_target = torch.ones_like(numer, dtype=torch.bool)
    non_target[rows, label] = False
    b_avg = torch.where(non_target, numer, torch.zeros_like(numer)).sum() / len(label)
    theta_med = torch.clamp(theta[rows, label].median(), max=math.pi / 4)
    s = log_scale.exp()
    if distance == "arccos":
        g = theta_med ** s
    else:
        g = (2 - 2 * torch.cos(theta_med) + 1e-12) ** (s / 2)
    return (b_avg * (s + 1) * g + 1 - s) ** 2


class ProxyHead(nn.Module):
    """Replaces the network's ``fc``: embedding → normalised features against normalised proxies → logits."""

    def __init__(self, in_features: int, num_classes: int, distance: str = "euc", dynamic_scale: bool = False,
                 embedding_dim: Optional[int] = 128) -> None:
        super().__init__()
        if distance not in DISTANCES:
            raise ConfigError(f"method.distance must be one of {DISTANCES}, got {distance!r}")
        self.distance, self.dynamic_scale = distance, dynamic_scale
        # the code's backbone ends in Linear(2048, 128); None feeds the pooled features (post-ReLU) directly
        self.embedding = nn.Linear(in_features, embedding_dim) if embedding_dim else nn.Identity()
        dim = embedding_dim or in_features
        self.proxies = nn.Parameter(F.normalize(torch.randn(num_classes, dim)))
        s0 = initial_scale(num_classes, distance) if dynamic_scale else FIXED_SCALE
        self.register_buffer("log_scale", torch.tensor(math.log(s0)))
        # Adam state of the scale's own optimiser, kept as buffers so a checkpoint resumes it exactly
        self.register_buffer("scale_step", torch.tensor(0))
        self.register_buffer("scale_exp_avg", torch.tensor(0.0))
        self.register_buffer("scale_exp_avg_sq", torch.tensor(0.0))
        self.last_cos: Optional[torch.Tensor] = None   # the batch's detached cos, for update_scale

    @property
    def class_vectors(self) -> torch.Tensor:
        return self.proxies

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def cosine(self, h: torch.Tensor) -> torch.Tensor:
        f = self.embedding(h)
        return (f / f.norm(dim=1, keepdim=True)) @ (self.proxies / self.proxies.norm(dim=1, keepdim=True)).T

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        cos = self.cosine(h)
        self.last_cos = cos.detach()
        return proxy_logits(cos, self.scale.detach(), self.distance)

    @torch.no_grad()
    def update_scale(self, cos: torch.Tensor, label: torch.Tensor) -> None:
        """One Adam step on log s against ``scale_residual`` (the code's ``optimizer0.step()`` per batch)."""
        with torch.enable_grad():
            log_s = self.log_scale.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(scale_residual(log_s, cos.detach(), label, self.distance), log_s)
        beta1, beta2 = BETAS
        self.scale_step += 1
        self.scale_exp_avg.mul_(beta1).add_((1 - beta1) * grad)
        self.scale_exp_avg_sq.mul_(beta2).add_((1 - beta2) * grad * grad)
        t = self.scale_step.item()
        m_hat = self.scale_exp_avg / (1 - beta1 ** t)
        v_hat = self.scale_exp_avg_sq / (1 - beta2 ** t)
        self.log_scale -= SCALE_LR * m_hat / (v_hat.sqrt() + ADAM_EPS)


class ProxyDR(Method):
    """ProxyDR: the network's classifier replaced by a ``ProxyHead``; plain cross-entropy on its logits."""

    auxiliary = False

    def __init__(self, name: str = "proxydr", position: int = 3, distance: str = "euc",
                 dynamic_scale: bool = False, embedding_dim: Optional[int] = 128) -> None:
        super().__init__(name, position)
        if distance not in DISTANCES:
            raise ConfigError(f"method.distance must be one of {DISTANCES}, got {distance!r}")
        self.distance, self.dynamic_scale, self.embedding_dim = distance, dynamic_scale, embedding_dim
        self.head: Optional[ProxyHead] = None

    def attach(self, net: nn.Module, num_classes: int, num_superclasses: int) -> None:
        self.head = ProxyHead(net.num_features, num_classes, self.distance, self.dynamic_scale, self.embedding_dim)
        net.fc = self.head

    def loss(self, output: NetOutput, label: torch.Tensor, superclass: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(output.logits, label)
        # the scale adapts on training batches only (the code updates it inside the training loop)
        if self.dynamic_scale and self.head.training and torch.is_grad_enabled() and self.head.last_cos is not None:
            self.head.update_scale(self.head.last_cos, label)
        return loss
