"""HAFrame (Liang & Davis, "Inducing Neural Collapse to a Fixed Hierarchy-Aware Frame for Reducing Mistake
Severity", ICCV 2023), as the official code does it (GitHub ltong1130ztr/HAFrame: ``HAFrame/solve_HAF.py``,
``HAFrame/losses.py`` ``MixedLoss_CEandGeneralSCSL`` (``--loss mixed-ce-gscsl``), ``util/arch/wideresnet.py``
``HAFrameWideResNet``, ``util/arch/HAF_resnet.py``).

The frame. With h(a, b) the tree distance (the LCA height of ``src.data.tree``, the code's "ilsvrc" distance) and
h_max its largest value, the target cosine similarities of the K class vectors are::

    S_ab(s_min) = (1 − s_min) · exp(−γ · h(a, b) / h_max) + s_min

s_min is the smallest of 100 values ``linspace(−1/(K−1), −1, 100)`` for which S is positive semi-definite
(eigenvalues below 1e-6 in magnitude count as 0). With S = V Λ Vᵀ and Q the Q factor of a Gaussian (K, K) matrix
scaled by √(2/K), the frame is W = (Q Λ^{1/2} Vᵀ)ᵀ (K, K): W Wᵀ = S, any rotation Q. W is fixed (not trained).

The network. The pooled features pass the code's transformation module, to K dimensions: a bias-free linear map
(the code's 1×1 convolution before the pooling, which commutes with it), BatchNorm1d, and two
residual layers (Linear → BN → PReLU, twice, plus the identity), giving x (B, K). The logits are x Wᵀ (no bias).

The loss, with (β, α) = ``mixing_ratio(loss_schedule, epoch, epochs, period)``::

    L = β · CE(x Wᵀ, y) + α · (1/B) Σ_b Σ_c (cos(W_c, x_b) − S_{c, y_b})²

A number ``loss_schedule`` is a constant α (β = 1 − α, or β = 1 if α > 1); the code's named schedules
(``linear-decrease``, ``linear-increase``, ``cosine``, ``cosine-linear-increase``, ``cosine-linear-decrease``)
change it per epoch (0-based, as the code's epoch loop), the cosine ones with period ``loss_schedule_period``.
The method learns the epoch from its callback (``HAFrame.callbacks``, added by ``build()``).

Hyperparameters keep the code's names: ``haf_gamma`` (γ; its CIFAR-100 runs use 2.0), ``loss_schedule`` (its
CIFAR-100 runs use 0.4) and ``loss_schedule_period``.
"""
from typing import Optional

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from src.run.errors import ConfigError
from src.models.method import Method, NetOutput

SAMPLES = 100        # candidate s_min values (the code's num_samples)
# momentum of the head's first BatchNorm1d per backbone, as the code's head on that backbone: the CIFAR wide ResNet
# (util/arch/wideresnet.py HAFrameWideResNet.bn2) 0.001, as the rest of that net; the torchvision ResNet-50
# (util/arch/HAF_resnet.py HAFrameResNet50.features_1) PyTorch's default 0.1
HEAD_BN_MOMENTUM = {"PreActResNet": 0.001, "TorchvisionResNet": 0.1}
SCHEDULES = ("linear-decrease", "linear-increase", "cosine", "cosine-linear-increase", "cosine-linear-decrease")
EIGEN_EPSILON = 1e-6  # eigenvalues below this in magnitude count as 0


def similarity(hdistance: np.ndarray, gamma: float, min_similarity: float) -> np.ndarray:
    """S of the module docstring (the code's ``map_hdistance_to_cosine_similarity_exponential_decay``)."""
    if min_similarity < -1:
        raise ValueError(f"min_similarity must be >= -1, got {min_similarity}")
    return (1.0 - min_similarity) * np.exp(-gamma * hdistance / np.max(hdistance)) + min_similarity


def _psd_eigen(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    w, v = np.linalg.eigh(s)
    w = np.where(np.abs(w) < EIGEN_EPSILON, 0.0, w)
    return w, v, bool(np.min(w) >= 0)


def max_separation(hdistance: np.ndarray, gamma: float) -> float:
    """The smallest candidate s_min whose S is positive semi-definite (``find_max_separation_...``); inf if none."""
    k = hdistance.shape[0]
    best = float("inf")
    for s in np.linspace(-1.0 / (k - 1), -1.0, SAMPLES):
        if _psd_eigen(similarity(hdistance, gamma, s))[2]:
            best = min(best, s)
    return best


def haf_similarity(hdistance: np.ndarray, gamma: float) -> np.ndarray:
    """S at the maximal separation (the code's ``hdistance_to_similarity_matrix``)."""
    hdistance = np.asarray(hdistance, dtype=np.float64)
    s_min = max_separation(hdistance, gamma)
    if not np.isfinite(s_min):
        raise ConfigError(f"HAFrame: no positive semi-definite similarity matrix for haf_gamma={gamma}")
    return similarity(hdistance, gamma, s_min)


def haf_frame(hdistance: np.ndarray, gamma: float, num_features: Optional[int] = None,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(W (K, num_features), S (K, K)): the code's ``distance_matrix_to_haf_cls_weights``; its random rotation
    is ``np.random.RandomState(seed).randn`` (the code draws from numpy's global state)."""
    s = haf_similarity(hdistance, gamma)
    k = s.shape[0]
    num_features = num_features or k
    w, v, psd = _psd_eigen(s)
    if not psd:
        raise ConfigError("HAFrame: the cosine similarity matrix is not positive semi-definite")
    rotation = np.sqrt(2.0 / k) * np.random.RandomState(seed).randn(num_features, k)
    q, _ = np.linalg.qr(rotation)
    return (q @ (np.sqrt(np.diag(w)) @ v.T)).T, s


def mixing_ratio(loss_schedule, epoch: int = 0, epochs: int = 1, period: Optional[float] = None) -> tuple[float, float]:
    """(β, α): the weights of CE and of the cosine loss (the code's ``mixing_ratio_scheduler``)."""
    if loss_schedule == "linear-decrease":
        alpha = 1 - epoch / epochs
    elif loss_schedule == "linear-increase":
        alpha = epoch / epochs
    elif loss_schedule == "cosine":
        alpha = 0.5 * (1 - np.cos(2 * (np.pi / float(period)) * epoch))
    elif loss_schedule == "cosine-linear-increase":
        alpha = 0.5 * (1 - np.cos(2 * (np.pi / float(period)) * epoch)) * epoch / epochs
    elif loss_schedule == "cosine-linear-decrease":
        beta = 0.5 * (1 - np.cos(2 * (np.pi / float(period)) * epoch)) * epoch / epochs
        return beta, 1.0 - beta
    else:
        alpha = float(loss_schedule)
        return (1.0 - alpha if alpha <= 1.0 else 1.0), alpha
    return 1.0 - alpha, alpha


def squared_cosine_loss(frame: torch.Tensor, x: torch.Tensor, target_similarity: torch.Tensor) -> torch.Tensor:
    """(1/B) Σ_b Σ_c (cos(W_c, x_b) − S_{c, y_b})² (the code's ``GeneralSquareCosineSimilarityLoss``, batchmean)."""
    cos = F.cosine_similarity(frame[None, :, :], x[:, None, :], dim=2)   # (B, K)
    return torch.sum(torch.square(cos - target_similarity)) / target_similarity.shape[0]


def haframe_loss(frame: torch.Tensor, x: torch.Tensor, label: torch.Tensor, similarity_matrix: torch.Tensor,
                 beta: float, alpha: float) -> torch.Tensor:
    """β · CE(x Wᵀ, y) + α · squared_cosine_loss (the code's ``MixedLoss_CEandGeneralSCSL``, batchmean)."""
    logits = torch.matmul(x, frame.T)
    return beta * F.cross_entropy(logits, label) + alpha * squared_cosine_loss(frame, x, similarity_matrix[label])


class ResidualLayer(nn.Module):
    """The code's ``PointResidualTransformationLayer`` (in = out, no dropout): x + PReLU(BN(L₂ PReLU(BN(L₁ x))))."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(features, features, bias=False), nn.BatchNorm1d(features),
                                  nn.PReLU(features), nn.Linear(features, features, bias=False),
                                  nn.BatchNorm1d(features), nn.PReLU(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class HAFrameHead(nn.Module):
    """Replaces the network's ``fc``: transformation module to K features x, logits x Wᵀ against the fixed frame."""

    def __init__(self, in_features: int, frame: np.ndarray, bn_momentum: float = 0.1) -> None:
        super().__init__()
        k = frame.shape[0]
        self.transform = nn.Sequential(nn.Linear(in_features, k, bias=False), nn.BatchNorm1d(k, momentum=bn_momentum),
                                       ResidualLayer(k), ResidualLayer(k))
        self.register_buffer("frame", torch.as_tensor(frame, dtype=torch.float32))
        self.last_features: Optional[torch.Tensor] = None   # x of the last batch, for the cosine loss

    @property
    def class_vectors(self) -> torch.Tensor:
        return self.frame

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.transform(h)
        self.last_features = x
        return torch.matmul(x, self.frame.T)


class EpochOfMethod(pl.Callback):
    """Tells a method the training epoch (0-based) and the number of epochs, before each training epoch."""

    def __init__(self, method: "HAFrame") -> None:
        self.method = method

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.method.epoch, self.method.epochs = trainer.current_epoch, max(int(trainer.max_epochs or 1), 1)


class HAFrame(Method):
    """HAFrame: the network's classifier replaced by an ``HAFrameHead`` on the run's case tree (``method.tree``)."""

    auxiliary = False
    needs_superclasses = True

    def __init__(self, name: str = "haframe", position: int = 3, haf_gamma: float = 2.0,
                 loss_schedule="0.4", loss_schedule_period: Optional[float] = None,
                 frame_seed: Optional[int] = 0, bn_momentum: Optional[float] = None) -> None:
        super().__init__(name, position)
        if loss_schedule not in SCHEDULES:
            try:
                loss_schedule = float(loss_schedule)
            except (TypeError, ValueError):
                raise ConfigError(f"method.loss_schedule must be a number or one of {list(SCHEDULES)} (the official "
                                  f"code's --loss-schedule), got {loss_schedule!r}") from None
        elif loss_schedule.startswith("cosine") and not (loss_schedule_period or 0) > 0:
            raise ConfigError(f"method.loss_schedule={loss_schedule} needs method.loss_schedule_period > 0")
        if not haf_gamma > 0:
            raise ConfigError(f"method.haf_gamma must be > 0 (the official code asserts it), got {haf_gamma!r}")
        if bn_momentum is not None and not 0 < bn_momentum <= 1:
            raise ConfigError(f"method.bn_momentum must be null (the official value per backbone) or in (0, 1], "
                              f"got {bn_momentum!r}")
        # null: HEAD_BN_MOMENTUM's official value for the backbone, made for ~200-epoch budgets; a short run's
        # running statistics barely leave their start at 0.001 (5 digits epochs: ~55 steps), so tuning sets it
        self.bn_momentum = None if bn_momentum is None else float(bn_momentum)
        self.loss_schedule, self.loss_schedule_period = loss_schedule, loss_schedule_period
        self.haf_gamma, self.frame_seed = float(haf_gamma), int(frame_seed or 0)
        self.epoch, self.epochs = 0, 1
        self.head: Optional[HAFrameHead] = None
        self.callbacks = [EpochOfMethod(self)]

    def attach(self, net: nn.Module, num_classes: int, num_superclasses: int) -> None:
        backbone = type(net).__name__
        if backbone not in HEAD_BN_MOMENTUM:
            raise ConfigError(f"method=haframe knows the heads of {list(HEAD_BN_MOMENTUM)}, not of {backbone}")
        frame, s = haf_frame(self.tree.lca_heights, self.haf_gamma, seed=self.frame_seed)
        momentum = HEAD_BN_MOMENTUM[backbone] if self.bn_momentum is None else self.bn_momentum
        self.head = HAFrameHead(net.num_features, frame, momentum)
        self.head.register_buffer("similarity", torch.as_tensor(s, dtype=torch.float32))
        net.fc = self.head

    def loss(self, output: NetOutput, label: torch.Tensor, superclass: torch.Tensor) -> torch.Tensor:
        beta, alpha = mixing_ratio(self.loss_schedule, self.epoch, self.epochs, self.loss_schedule_period)
        # the logits are x Wᵀ of the head's last call, the same x as here
        return haframe_loss(self.head.frame, self.head.last_features, label, self.head.similarity, beta, alpha)
