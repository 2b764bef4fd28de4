"""ProxyDR's hierarchy-inspection metrics (Kim et al.; seeds/002; GitHub hjk92g/ProxyDR ``eval_cifar100.py``):
do the class representatives (classifier rows or proxies, (K, l)) arrange themselves like the class tree?

The tree here has two levels, root → superclass → class, given as a table t[class] = superclass. Its
distance is the path length through the lowest common ancestor (the code's ``calc_dist``)::

    d_T(a, b) = 0 (a = b),  2 (t[a] = t[b]),  4 (otherwise)

Representatives are compared by the distance ProxyDR's evaluation uses: normalise, ŵ = w/‖w‖, then the
chordal distance d(a, b) = ‖ŵ_a − ŵ_b‖ = √(2 − 2 ŵ_a·ŵ_b) (``euc``, the code's default), or the angle
arccos(ŵ_a·ŵ_b) (``arccos``). The two are monotone in each other, so the mean correlation is the same for both.
"""
from typing import Optional, Sequence

import numpy as np
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform
from scipy.stats import spearmanr

Table = Optional[Sequence[int]]


def tree_distance_matrix(table: Sequence[int]) -> np.ndarray:
    """d_T (K, K): 0 on the diagonal, 2 within a superclass, 4 across."""
    t = np.asarray(table)
    d = np.where(t[:, None] == t[None, :], 2.0, 4.0)
    np.fill_diagonal(d, 0.0)
    return d


def representative_distances(class_vectors: np.ndarray, distance: str = "euc") -> np.ndarray:
    """d (K, K) between normalised representatives: ‖ŵ_a − ŵ_b‖ (euc) or arccos(ŵ_a·ŵ_b) (arccos)."""
    w = np.asarray(class_vectors, dtype=np.float64)
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    cos = np.clip(w @ w.T, -1.0, 1.0)
    d = np.arccos(cos) if distance == "arccos" else np.sqrt(2.0 - 2.0 * cos)
    np.fill_diagonal(d, 0.0)
    return d


def hierarchy_mean_corr(class_vectors: np.ndarray, table: Table, distance: str = "euc",
                        include_self: bool = False) -> Optional[float]:
    """Mean per-class Spearman correlation between representative and tree distances, Fisher-averaged::

        ρ_i = Spearman( (d(i, j))_{j≠i}, (d_T(i, j))_{j≠i} )
        mean_corr = tanh( mean_i atanh(clip(ρ_i, −1+1e-12, 1−1e-12)) )

    Classes whose ρ_i is undefined (constant tree or representative distances) are left out of the mean,
    as the code's ``nanmean``; None when no class has one (no table, or every class's tree distances are
    constant: one superclass, or one class per superclass). The code's ``corr_from_DMs`` correlates whole
    columns, the class's zero distance to itself included; ``include_self=True`` does that.
    """
    if table is None or len(table) < 3:
        return None
    d, d_t = representative_distances(class_vectors, distance), tree_distance_matrix(table)
    z = []
    for i in range(len(d)):
        keep = np.ones(len(d), dtype=bool) if include_self else np.arange(len(d)) != i
        if np.ptp(d_t[i, keep]) == 0 or np.ptp(d[i, keep]) == 0:
            continue
        rho = spearmanr(d[i, keep], d_t[i, keep]).statistic
        z.append(np.arctanh(np.clip(rho, -1 + 1e-12, 1 - 1e-12)))
    return float(np.tanh(np.mean(z))) if z else None


def _splits(clusters: list[frozenset], k: int) -> set[frozenset]:
    """Non-trivial bipartitions of an unrooted tree from its rooted clusters: both sides ≥ 2 leaves, each named
    by the side without leaf 0 (so a cluster and its complement are one split)."""
    everything = frozenset(range(k))
    out = set()
    for c in clusters:
        if 2 <= len(c) <= k - 2:
            out.add(c if 0 not in c else everything - c)
    return out


def upgma_clusters(d: np.ndarray, tol: float = 1e-9) -> list[frozenset]:
    """Clusters of the UPGMA tree (scipy average linkage) of d, internal edges of zero length contracted:
    a merge at the height of its parent's merge (within ``tol``·max d) is not a cluster of its own, so tied
    distances give a multifurcation instead of an arbitrary binary resolution."""
    k = len(d)
    z = linkage(squareform(d, checks=False), method="average")
    members = {i: frozenset([i]) for i in range(k)}
    height = {i: 0.0 for i in range(k)}
    parent_height = {}
    for m, (a, b, h, _) in enumerate(z):
        node = k + m
        members[node] = members[int(a)] | members[int(b)]
        height[node] = h
        parent_height[int(a)] = parent_height[int(b)] = h
    eps = tol * max(float(d.max()), 1.0)
    return [members[n] for n in range(k, 2 * k - 1)
            if n in parent_height and parent_height[n] - height[n] > eps]


def hierarchy_rf(class_vectors: np.ndarray, table: Table, distance: str = "euc") -> Optional[float]:
    """Normalised Robinson–Foulds distance between the UPGMA tree of the representative distances and the
    superclass tree (root → superclasses → classes), both as unrooted trees (the code's
    ``compare(..., unrooted=True)``)::

        S(T) = non-trivial splits of T (bipartitions of the classes with ≥ 2 on each side)
        rf   = |S(T_rep) △ S(T_sup)| / (|S(T_rep)| + |S(T_sup)|)

    0: same topology; 1: no split in common. Zero-length UPGMA edges are contracted (``upgma_clusters``). A
    binary UPGMA tree has K − 3 splits while the superclass tree has at most one per superclass, so even a
    perfect arrangement with distinct distances scores above 0. None when undefined or uninformative: no
    table, fewer than 4 classes, or a superclass tree without a split (no superclass with 2 ≤ size ≤ K − 2,
    e.g. one superclass or one class per superclass), against which every learned split counts as wrong.
    """
    if table is None or len(table) < 4:
        return None
    k, t = len(table), np.asarray(table)
    reference = _splits([frozenset(np.flatnonzero(t == s).tolist()) for s in np.unique(t)], k)
    learned = _splits(upgma_clusters(representative_distances(class_vectors, distance)), k)
    if not reference:
        return None
    return len(reference ^ learned) / (len(reference) + len(learned))
