"""How bad the mistakes are, against a class tree (docs/hierarchy.md, "Hierarchy metrics").

The field's metrics (Making Better Mistakes, Bertinetto et al. 2020, GitHub fiveai/making-better-mistakes; CRM,
Karthik et al. 2021, GitHub sgk98/CRM-Better-Mistakes), with h(a, b) the LCA height of ``src.data.tree`` (their
"ilsvrc" distance; leaves 0, in tree levels)::

    mistake severity   = mean over the mistakes (ŷ ≠ y) of h(ŷ, y)
    HD@k               = mean over images of (1/k) Σ_{c in the top k} h(c, y),   k in (1, 5, 20), k < K
    level accuracy     = % of images whose predicted class is in the true class's group, per level
    top-k accuracy     = % of images whose class is among the k best scored (k = 1, 5), MBM's ``accuracy``
    best HD@k          = mean over images of min_{c in the top k} h(c, y): MBM's "hdist_top" (run_xent.py)
    mistakes by height = how many top-1 mistakes have h(ŷ, y) = 1, 2, ..., L + 1 (a list, entry h − 1)
    ECE, MCE           = the mean and the largest |accuracy − mean confidence| of the max softmax over 15 bins
                         (lo, hi] on [0, 1], the first [0, 1/15] (CRM's ``guo_ECE`` and ``MCE``), fractions
    CRM                = argmin_c Σ_j p_j · h(c, j): the class of least expected tree distance under the softmax

Top-k lists are sorted by score with ties to the lower class index (a stable sort), as the CRM code's
``heapq.nlargest``; the top-1 class is the argmax (first maximum). Pure torch on (N, K) scores: the test
protocols call ``mistake_record`` once on the whole test split.
"""
from typing import Optional

import torch
import numpy as np

from src.data.tree import CLASS_LEVEL, ClassTree

KS = (1, 5, 20)
TOP_KS = (1, 5)   # top-k accuracy, as MBM's ``accuracy(output, target, ks)``
ECE_BINS = 15


def ranking(scores: torch.Tensor) -> torch.Tensor:
    """Classes by decreasing score (N, K), ties to the lower index."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def mistake_severity(predicted: torch.Tensor, label: torch.Tensor, heights: torch.Tensor) -> Optional[float]:
    """Mean h(ŷ, y) over the mistakes; None without a mistake."""
    wrong = predicted != label
    return float(heights[predicted[wrong], label[wrong]].double().mean()) if wrong.any() else None


def hierarchical_distance(order: torch.Tensor, label: torch.Tensor, heights: torch.Tensor,
                          ks=KS) -> dict[str, float]:
    """{str(k): HD@k} from the ranking ``order`` (N, K), for each k < K."""
    k_max = order.shape[1]
    h = heights[order, label[:, None]].double()  # h(c, y) of each image's ranked classes
    return {str(k): float(h[:, :k].mean()) for k in ks if k < k_max}


def level_accuracy(predicted: torch.Tensor, label: torch.Tensor, tree: ClassTree) -> dict[str, float]:
    """{level: % of images predicted in the true group}, the classes themselves first (``class``)."""
    out = {CLASS_LEVEL: float(100 * (predicted == label).double().mean())}
    for level in tree.levels:
        t = torch.as_tensor(level.table)
        out[level.name] = float(100 * (t[predicted] == t[label]).double().mean())
    return out


def crm_scores(probabilities: torch.Tensor, heights: torch.Tensor) -> torch.Tensor:
    """−Σ_j p_j · h(c, j) for every class c (N, K): the argmax is CRM's prediction, the ranking its top k."""
    return -(probabilities.double() @ heights.double())


def calibration_errors(probabilities: torch.Tensor, label: torch.Tensor, bins: int = ECE_BINS) -> tuple[float, float]:
    """(ECE, MCE) of the max probability, CRM's ``guo_ECE`` and ``MCE`` (its ``ECE_helper``, ``compute_acc_bin``):
    bins (lo, hi] with upper bounds ``arange(1/bins, 1 + 1/bins, 1/bins)`` and the first bin closed at 0, so a
    saturated confidence of exactly 1.0 lands in the last bin (torchmetrics' binning drops it). An empty bin adds
    nothing to ECE and counts as 0 in MCE, as in the code."""
    p = probabilities.detach().double().cpu().numpy()
    confidence, correct = p.max(axis=1), p.argmax(axis=1) == label.cpu().numpy()
    size = 1 / bins
    ece, gaps = 0.0, []
    for upper in np.arange(size, 1 + size, size):
        lower = upper - size
        inside = ((confidence > lower) | (lower == 0)) & (confidence <= upper)
        n = int(inside.sum())
        gap = abs(correct[inside].mean() - confidence[inside].sum() / n) if n else 0.0
        ece += gap * n / len(confidence)
        gaps.append(gap)
    return float(ece), float(max(gaps))


def calibration_error(probabilities: torch.Tensor, label: torch.Tensor) -> float:
    """15-bin ECE of the max probability (L1), as CRM's ``guo_ECE``: ``calibration_errors``' first value."""
    return calibration_errors(probabilities, label)[0]


def top_k_accuracy(order: torch.Tensor, label: torch.Tensor, ks=TOP_KS) -> dict[str, float]:
    """{f"top{k}_acc": % of images whose class is in the top k}, for each k ≤ K."""
    hit = order == label[:, None]
    return {f"top{k}_acc": float(100 * hit[:, :k].any(1).double().mean()) for k in ks if k <= order.shape[1]}


def best_hierarchical_distance(order: torch.Tensor, label: torch.Tensor, heights: torch.Tensor,
                               ks=KS) -> dict[str, float]:
    """{str(k): mean over images of min_{c in the top k} h(c, y)}, for each k < K (MBM's "hdist_top")."""
    h = heights[order, label[:, None]].double()
    return {str(k): float(h[:, :k].min(1).values.mean()) for k in ks if k < order.shape[1]}


def mistakes_by_height(predicted: torch.Tensor, label: torch.Tensor, heights: torch.Tensor) -> list[int]:
    """Counts of top-1 mistakes by LCA height: entry h − 1 counts the mistakes with h(ŷ, y) = h, h = 1..L+1."""
    h = heights[predicted, label]
    return torch.bincount(h[h > 0] - 1, minlength=int(heights.max())).tolist()


def mistake_record(scores: torch.Tensor, label: torch.Tensor, tree: Optional[ClassTree]) -> dict:
    """The ``metrics.json`` fields of this module from one protocol's scores (N, K) on the test split.

    The probabilities are softmax(scores). Without a tree only ``ece`` is defined (the rest is None or empty).
    """
    scores, label = scores.detach().float().cpu(), label.cpu()
    probabilities = scores.softmax(dim=1)
    # calibration from float64 probabilities, as CRM's numpy softmax of the logits
    ece, mce = calibration_errors(scores.double().softmax(dim=1), label) if len(label) else (None, None)
    record = {"ece": ece, "mce": mce, **top_k_accuracy(ranking(scores), label),
              "hierarchy_name": None if tree is None else tree.name,
              "mistake_severity": None, "hierarchical_distance": {}, "level_acc": {},
              "hierarchical_distance_top": {}, "mistakes_by_height": [],
              "test_error_crm": None, "mistake_severity_crm": None, "hierarchical_distance_crm": {}}
    if tree is None or not len(label):
        return record
    heights = torch.tensor(tree.lca_heights)
    order = ranking(scores)
    record.update(mistake_severity=mistake_severity(order[:, 0], label, heights),
                  hierarchical_distance=hierarchical_distance(order, label, heights),
                  level_acc=level_accuracy(order[:, 0], label, tree),
                  hierarchical_distance_top=best_hierarchical_distance(order, label, heights),
                  mistakes_by_height=mistakes_by_height(order[:, 0], label, heights))
    crm = ranking(crm_scores(probabilities, heights))
    record.update(test_error_crm=float(100 * (crm[:, 0] != label).double().mean()),
                  mistake_severity_crm=mistake_severity(crm[:, 0], label, heights),
                  hierarchical_distance_crm=hierarchical_distance(crm, label, heights))
    return record
