"""Soft labels (Bertinetto et al., "Making Better Mistakes", CVPR 2020), as the official code computes them
(GitHub fiveai/making-better-mistakes: ``better_mistakes/model/labels.py`` ``make_all_soft_labels``,
``scripts/start_training.py`` ``nn.KLDivLoss()``, ``better_mistakes/model/run_xent.py``).

With d(a, b) the tree distance (MBM's "ilsvrc" distance: the LCA height h of ``src.data.tree``)::

    q_y(c)  = exp(−β · d(c, y) / d_max) / Σ_j exp(−β · d(j, y) / d_max)        d_max = max_{a,b} d(a, b)
    loss    = KLDivLoss(log_softmax(z), q_y)  = (1 / (B·K)) Σ_b Σ_c q_{y_b}(c) · (log q_{y_b}(c) − log p_b(c))

The code's ``nn.KLDivLoss()`` has the default ``reduction="mean"``: a mean over all B·K entries, so the loss is
1/K of the per-image KL divergence. That is what the official runs trained with, and it is the default here
(``reduction: mean``); ``reduction: batchmean`` gives the per-image mean (the KL divergence itself).

β is the code's ``--beta`` ("softness": the higher, the closer to one-hot). Its default there is 0, which turns
soft labels off (one-hot targets, here too); the paper's experiments use 4 to 30
(``experiments/softlabels_*_beta*.sh``), and ``conf/method/soft_labels.yaml`` takes β = 10.
"""
import numpy as np
import torch
import torch.nn.functional as F

from src.run.errors import ConfigError
from src.models.method import Method, NetOutput

REDUCTIONS = ("mean", "batchmean")


def soft_label_matrix(heights: np.ndarray, beta: float) -> np.ndarray:
    """S (K, K) with column y the target distribution q_y (the code's ``make_all_soft_labels``), float64.
    β = 0 gives one-hot targets, the identity: the code then skips soft labels (``opts.soft_labels = opts.beta != 0``
    in ``scripts/start_training.py``) rather than train on uniform targets, which would ignore the label."""
    d = np.asarray(heights, dtype=np.float64)
    if beta == 0:
        return np.eye(len(d))
    d = d / d.max()
    e = np.exp(-beta * d)
    return e / e.sum(axis=0, keepdims=True)


def soft_label_loss(logits: torch.Tensor, label: torch.Tensor, soft_labels: torch.Tensor,
                    reduction: str = "mean") -> torch.Tensor:
    """The module docstring's loss; ``soft_labels`` is S (K, K), column y the target of class y."""
    target = soft_labels.T[label]                          # the code's make_batch_soft_labels: S[:, y]
    total = F.kl_div(F.log_softmax(logits, dim=1), target, reduction="sum")
    # "mean" by hand: torch warns on reduction="mean" (it plans to make it batchmean)
    return total / (target.numel() if reduction == "mean" else len(target))


class SoftLabels(Method):
    """Soft labels on the main head; the class tree is the run's case tree (``method.tree``, set by ``build()``)."""

    auxiliary = False
    needs_superclasses = True

    def __init__(self, name: str = "soft_labels", position: int = 3, beta: float = 10.0,
                 reduction: str = "mean") -> None:
        super().__init__(name, position)
        if reduction not in REDUCTIONS:
            raise ConfigError(f"method.reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
        self.beta, self.reduction = float(beta), reduction
        self._soft_labels: dict = {}

    def loss(self, output: NetOutput, label: torch.Tensor, superclass: torch.Tensor) -> torch.Tensor:
        key = (output.logits.device, output.logits.dtype)
        if key not in self._soft_labels:   # S built once per device (float32 in the code: torch.Tensor)
            s = soft_label_matrix(self.tree.lca_heights, self.beta)
            self._soft_labels[key] = torch.as_tensor(s, dtype=torch.float32).to(key[0], key[1])
        return soft_label_loss(output.logits, label, self._soft_labels[key], self.reduction)

    def loss_scale(self) -> float:
        """K with ``reduction: mean`` (the loss is the KL divergence over K), else 1."""
        return float(self.tree.num_classes) if self.reduction == "mean" else 1.0


class HALSoftLabels(SoftLabels):
    """Soft labels with HAL's auxiliary block on the main path (fed the case's superclass, as ``method=hal``)."""

    auxiliary = True

    def __init__(self, name: str = "hal_soft_labels", position: int = 3, beta: float = 10.0,
                 reduction: str = "mean") -> None:
        super().__init__(name, position, beta, reduction)
