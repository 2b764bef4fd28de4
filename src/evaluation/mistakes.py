"""How bad the mistakes are, against a class tree (docs/hierarchy.md, "Hierarchy metrics").

The field's metrics (Making Better Mistakes, Bertinetto et al. 2020, GitHub fiveai/making-better-mistakes; CRM,
Karthik et al. 2021, GitHub sgk98/CRM-Better-Mistakes), with h(a, b) the LCA height of ``src.data.tree`` (their
"ilsvrc" distance; leaves 0, in tree levels)::

    mistake severity   = mean over the mistakes (ŷ ≠ y) of h(ŷ, y)
    HD@k               = mean over images of (1/k) Σ_{c in the top k} h(c, y),   k in (1, 5, 20), k < K
    level accuracy     = % of images whose predicted class is in the true class's group, per level
    ECE                = 15-bin expected calibration error of the max softmax (torchmetrics), a fraction
    CRM                = argmin_c Σ_j p_j · h(c, j): the class of least expected tree distance under the softmax

Top-k lists are sorted by score with ties to the lower class index (a stable sort), as the CRM code's
``heapq.nlargest``; the top-1 class is the argmax (first maximum). Pure torch on (N, K) scores: the test
protocols call ``mistake_record`` once on the whole test split.
"""
from typing import Optional

import torch
from torchmetrics.classification import MulticlassCalibrationError

from src.data.tree import CLASS_LEVEL, ClassTree

KS = (1, 5, 20)
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


def calibration_error(probabilities: torch.Tensor, label: torch.Tensor) -> float:
    """15-bin ECE of the max probability (L1), torchmetrics' ``MulticlassCalibrationError``."""
    metric = MulticlassCalibrationError(num_classes=probabilities.shape[1], n_bins=ECE_BINS, norm="l1")
    return float(metric(probabilities.float(), label))


def mistake_record(scores: torch.Tensor, label: torch.Tensor, tree: Optional[ClassTree]) -> dict:
    """The ``metrics.json`` fields of this module from one protocol's scores (N, K) on the test split.

    The probabilities are softmax(scores). Without a tree only ``ece`` is defined (the rest is None or empty).
    """
    scores, label = scores.detach().float().cpu(), label.cpu()
    probabilities = scores.softmax(dim=1)
    record = {"ece": calibration_error(probabilities, label) if len(label) else None,
              "hierarchy_name": None if tree is None else tree.name,
              "mistake_severity": None, "hierarchical_distance": {}, "level_acc": {},
              "test_error_crm": None, "mistake_severity_crm": None, "hierarchical_distance_crm": {}}
    if tree is None or not len(label):
        return record
    heights = torch.tensor(tree.lca_heights)
    order = ranking(scores)
    record.update(mistake_severity=mistake_severity(order[:, 0], label, heights),
                  hierarchical_distance=hierarchical_distance(order, label, heights),
                  level_acc=level_accuracy(order[:, 0], label, tree))
    crm = ranking(crm_scores(probabilities, heights))
    record.update(test_error_crm=float(100 * (crm[:, 0] != label).double().mean()),
                  mistake_severity_crm=mistake_severity(crm[:, 0], label, heights),
                  hierarchical_distance_crm=hierarchical_distance(crm, label, heights))
    return record
