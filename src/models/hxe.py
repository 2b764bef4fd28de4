"""Hierarchical cross-entropy, HXE (Bertinetto et al., "Making Better Mistakes", CVPR 2020), as the official
``better_mistakes/model/losses.py`` (GitHub fiveai/making-better-mistakes, ``HierarchicalCrossEntropyLoss``) and
``trees.py`` (``get_exponential_weighting``) compute it.

The flat softmax p over the K classes gives every node n of the class tree a probability p(n) = Σ_{c under n} p_c.
For the path of the true class y from its leaf up to the root, y = n_0, n_1, ..., n_L, n_{L+1} = root::

    HXE(z, y) = Σ_{i=0..L} λ(n_i) · −log( p(n_i) / p(n_{i+1}) ),     p = softmax(z)
    λ(n) = exp(−α · depth(n)) / Σ_{all nodes m, root and leaves included} exp(−α · depth(m))

with depth(root) = 0 and depth(leaf) = L + 1 (every class at the same depth: ``src.data.tree``). Where the leaves
sit at different depths (tieredImageNet-H), the tree is padded with copies of the shallow classes; the normaliser
counts each real node once (``ClassTree.node_counts``), as the code's sum over MBM's unpadded tree, and the copies'
terms are −log(p_c / p_c) = 0, so a class's term keeps its real depth's weight. A term whose
numerator is exactly 0 contributes 0 (the code's ``num != 0`` mask); the denominator of the last term is the sum
of all probabilities, as in the code. The loss is the mean over the batch.

α is the code's ``--alpha``. Its default there is 0 (uniform weights); the paper's experiments use 0.1 to 0.9
(``experiments/hxe_*_alpha0.1.sh`` ...), and ``conf/method/hxe.yaml`` takes α = 0.1, the value the follow-up
papers (CRM, HAF, HAFrame) report beside cross-entropy.
"""
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
import torch.nn.functional as F

from src.models.method import Method, NetOutput
if TYPE_CHECKING:  # models/ imports no data/ module at run time
    from src.data.tree import ClassTree


def hxe_weights(tree: "ClassTree", alpha: float) -> np.ndarray:
    """λ of the path's nodes, leaf first: (L + 1,), float64 (the code sums the normaliser with ``math.fsum``)."""
    depth_leaf = len(tree.levels) + 1
    # real nodes per depth, each once: a padded tree's copies of a shallow class are not nodes of MBM's tree
    total = float(np.sum([n * np.exp(-alpha * d) for d, n in enumerate(tree.node_counts)]))
    return np.array([np.exp(-alpha * (depth_leaf - i)) for i in range(depth_leaf)]) / total


def hierarchical_cross_entropy(logits: torch.Tensor, label: torch.Tensor, tree: "ClassTree", alpha: float,
                               weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """HXE of the module docstring, mean over the batch."""
    p = F.softmax(logits, dim=1)
    if weights is None:
        weights = torch.as_tensor(hxe_weights(tree, alpha), dtype=p.dtype, device=p.device)
    # p(n_i) of the path's nodes: the class itself, then its group at each level, then the root (Σ p)
    nodes = [p.gather(1, label[:, None]).squeeze(1)]
    for level in tree.levels:
        t = torch.as_tensor(level.table, device=p.device)
        groups = torch.zeros(len(p), len(level.group_names), dtype=p.dtype, device=p.device).index_add_(1, t, p)
        nodes.append(groups.gather(1, t[label][:, None]).squeeze(1))
    nodes.append(p.sum(1))
    num, den = torch.stack(nodes[:-1], 1), torch.stack(nodes[1:], 1)
    kept = num != 0
    # the dropped terms' ratio is computed too (torch.where has both branches): 1 / 1 there, not 0 / 0, whose
    # gradient (0 · inf) would be NaN for the whole row and then the whole batch's update
    one = torch.ones_like(num)
    ratio = torch.where(kept, num, one) / torch.where(kept, den, one)
    terms = torch.where(kept, -torch.log(ratio), torch.zeros_like(num))
    # summed root side first, as the code's torch.flip (float sums depend on the order)
    return torch.sum(torch.flip(weights * terms, dims=[1]), dim=1).mean()


class HXE(Method):
    """HXE on the main head; the class tree is the run's case tree (set by ``build()`` as ``method.tree``)."""

    auxiliary = False
    needs_superclasses = True

    def __init__(self, name: str = "hxe", position: int = 3, alpha: float = 0.1) -> None:
        super().__init__(name, position)
        self.alpha = float(alpha)
        self._weights: dict = {}

    def loss(self, output: NetOutput, label: torch.Tensor, superclass: torch.Tensor) -> torch.Tensor:
        key = (output.logits.device, output.logits.dtype)
        if key not in self._weights:   # λ built once per device, not every step
            self._weights[key] = torch.as_tensor(hxe_weights(self.tree, self.alpha), dtype=key[1], device=key[0])
        return hierarchical_cross_entropy(output.logits, label, self.tree, self.alpha, self._weights[key])

    def loss_scale(self) -> float:
        """The tree's nodes as λ's normaliser counts them (at α = 0 every node weighs 1, so 1/λ is the count: 13 on
        a 10-class, 2-superclass tree). At α = 0 HXE is cross-entropy over that count; at a small α, close to it."""
        return float(round(1 / hxe_weights(self.tree, 0.0)[0]))


class HALHXE(HXE):
    """HXE with HAL's auxiliary block on the main path (fed the case's superclass, as ``method=hal``)."""

    auxiliary = True

    def __init__(self, name: str = "hal_hxe", position: int = 3, alpha: float = 0.1) -> None:
        super().__init__(name, position, alpha)
