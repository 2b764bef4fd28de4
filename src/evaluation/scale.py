"""Confusions at 10,000 classes: a dense (K, K) int64 count matrix is 800 MB there, one per test protocol.

Above ``DENSE_CONFUSION_LIMIT`` classes the test protocols keep each protocol's confusion as a scipy sparse array
(at most one entry per test image); ``src.evaluation.protocols``'s ``error`` and ``hierarchy_metrics`` take either and give
the same numbers (integer counts summed in float64: exact). ``pair_spearman`` is the elementwise Spearman
correlation of ``hierarchy_spearman`` from the tree's uint8 LCA heights.
"""
from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from scipy import sparse
from scipy.stats import rankdata

DENSE_CONFUSION_LIMIT = 2048  # classes: a dense confusion is 32 MB here, drawn in confusion.png


def sparse_confusion(label: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> sparse.csr_array:
    """C[true, predicted] as a sparse array, repeated pairs summed."""
    label, predicted = label.cpu().numpy(), predicted.cpu().numpy()
    counts = np.ones(len(label), dtype=np.int64)
    return sparse.coo_array((counts, (label, predicted)), shape=(num_classes, num_classes)).tocsr()


def sparse_hierarchy_metrics(confusion: sparse.sparray, table: Sequence[int]) -> dict:
    """``src.evaluation.protocols.hierarchy_metrics`` of a sparse confusion with at least one count (same definitions)."""
    entries = sparse.coo_array(confusion)
    rows, cols, counts = entries.row, entries.col, entries.data.astype(np.float64)
    t = np.asarray(table)
    total = counts.sum()
    same, off_diagonal = t[rows] == t[cols], rows != cols
    mistakes = counts[off_diagonal].sum()
    seen = np.bincount(t[rows], weights=counts, minlength=t.max() + 1)
    right = np.bincount(t[rows][~off_diagonal], weights=counts[~off_diagonal], minlength=t.max() + 1)
    return {"superclass_acc": float(100 * counts[same].sum() / total),
            "within_superclass_mistakes": float(100 * counts[same & off_diagonal].sum() / mistakes) if mistakes else None,
            "per_superclass_error": [float(100 * (1 - r / n)) if n else None for r, n in zip(right, seen)]}


def pair_spearman(d: np.ndarray, heights: np.ndarray) -> Optional[float]:
    """Spearman's ρ between condensed distances d (float) and condensed LCA heights (a few integer values), as
    ``scipy.stats.spearmanr(d, 2·heights)`` but without a float copy of the heights: their average ranks come from
    their counts, and ρ is the Pearson correlation of the ranks. At 10,000 classes d has 5·10⁷ pairs (400 MB).
    None when the heights are constant or ρ is not finite."""
    counts = np.bincount(heights)
    if np.count_nonzero(counts) < 2:
        return None
    n = len(d)
    before = np.cumsum(counts) - counts
    height_rank = before + (counts + 1) / 2.0              # the average rank of each height value
    rank = rankdata(d)
    mean = (n + 1) / 2.0
    # Σ (r_i − r̄)(s_i − s̄) with s_i = height_rank[h_i]: group the ranks of d by height
    rank_sums = np.bincount(heights, weights=rank, minlength=len(counts))
    covariance = (rank_sums * height_rank).sum() - n * mean * mean
    variance_d = ((rank - mean) ** 2).sum()
    variance_h = (counts * (height_rank - mean) ** 2).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = covariance / np.sqrt(variance_d * variance_h)
    return float(np.clip(rho, -1.0, 1.0)) if np.isfinite(rho) else None
