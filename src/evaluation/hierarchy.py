"""ProxyDR's hierarchy-inspection metrics (Kim et al.; seeds/002), as its official ``eval_cifar100.py`` (GitHub
hjk92g/ProxyDR) computes them: do the class representatives (classifier rows or proxies, (K, l)) arrange
themselves like the class tree?

- Tree distance d_T(a, b): the number of edges on the path between a and b (the code's ``calc_dist``), 2·h(a, b)
  with h the LCA height of ``src.data.tree``.
- Learned distance d(a, b) between the normalised representatives ŵ = w/‖w‖, in the model's own metric (the
  code's ``--distance``): ``euc``, ‖ŵ_a − ŵ_b‖ = √(2 − 2 ŵ_a·ŵ_b), or ``arccos``, arccos(ŵ_a·ŵ_b).
- ``hierarchy_mean_corr``: the code's ``corr_from_DMs(d, d_T, classwise=True)``, Spearman correlations of whole
  columns (each class's zero distance to itself included), averaged through the Fisher z-transform.
- ``hierarchy_rf``: the code's ``tmp_upgma_tree.compare(True_upgma_tree, unrooted=True)["norm_rf"]``, both trees
  built by Biopython's ``DistanceTreeConstructor.upgma``, which merges by WPGMA (``wpgma_clusters``).

The two distances are monotone in each other, so the mean correlation is the same for both; the WPGMA tree,
which averages distances, is not. Ties in d_T (every tree has them) are broken by class order, as Biopython does:
the reference tree is one binary resolution of the class tree, and which one depends on the order of the classes
(docs/hierarchy.md).
"""
from typing import Optional, Union

import numpy as np
from scipy.stats import spearmanr

from src.data.tree import ClassTree, as_tree

Tree = Optional[Union[ClassTree, list, tuple]]  # a ClassTree, or a class -> superclass table (a two-level tree)


def tree_distance_matrix(tree: Tree) -> np.ndarray:
    """d_T (K, K): edges on the path between two classes (0 on the diagonal, 2 within a superclass of a two-level
    tree, 4 across)."""
    return as_tree(tree).path_lengths


def representative_distances(class_vectors: np.ndarray, distance: str = "euc") -> np.ndarray:
    """d (K, K) between normalised representatives: ‖ŵ_a − ŵ_b‖ (euc) or arccos(ŵ_a·ŵ_b) (arccos)."""
    w = np.asarray(class_vectors, dtype=np.float64)
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    cos = np.clip(w @ w.T, -1.0, 1.0)
    d = np.arccos(cos) if distance == "arccos" else np.sqrt(2.0 - 2.0 * cos)
    np.fill_diagonal(d, 0.0)
    return d


def hierarchy_mean_corr(class_vectors: np.ndarray, tree: Tree, distance: str = "euc") -> Optional[float]:
    """Fisher-averaged per-class Spearman correlation of whole columns (``corr_from_DMs``, ``fisher_corr``)::

        ρ_i = Spearman( (d(j, i))_j, (d_T(j, i))_j ),  j over all K classes, i itself included
        mean_corr = tanh( nanmean_i atanh(ρ_i) )

    As in the code, atanh(±1) is ±∞ (tanh(∞) = 1) and a column with constant distances has no ρ_i (NaN, left
    out by ``nanmean``). None without a tree, with fewer than 3 classes, or when no class has a ρ_i.
    """
    tree = as_tree(tree)
    if tree is None or tree.num_classes < 3:
        return None
    d, d_t = representative_distances(class_vectors, distance), tree_distance_matrix(tree)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = [spearmanr(d[:, i], d_t[:, i]).statistic if np.ptp(d[:, i]) and np.ptp(d_t[:, i]) else np.nan
               for i in range(len(d))]
        z = np.arctanh(np.asarray(rho, dtype=np.float64))
        if np.all(np.isnan(z)):
            return None
        mean = float(np.tanh(np.nanmean(z)))
    return mean if np.isfinite(mean) else None


def wpgma_clusters(d: np.ndarray) -> list[frozenset]:
    """The clusters of Biopython's ``DistanceTreeConstructor.upgma`` tree of d, merge by merge (a port).

    Each step merges the closest pair; ties go to the last pair in the scan order of the lower triangle (row i,
    then column j < i), since the code keeps a pair when ``min_dist >= d[i, j]``. The merged cluster takes the
    smaller index and its distance to every other is the plain mean (d_ik + d_jk)/2: WPGMA, whatever the name.
    """
    d = np.array(d, dtype=np.float64)
    clusters = [frozenset([i]) for i in range(len(d))]
    merges = []
    while len(clusters) > 1:
        rows, cols = np.tril_indices(len(d), k=-1)  # row-major: the code's double loop
        values = d[rows, cols]
        last = np.flatnonzero(values == values.min())[-1]
        i, j = int(rows[last]), int(cols[last])  # j < i
        merged = clusters[i] | clusters[j]
        merges.append(merged)
        d[j, :] = d[:, j] = (d[i, :] + d[j, :]) / 2
        d[j, j] = 0.0
        d = np.delete(np.delete(d, i, axis=0), i, axis=1)
        clusters[j] = merged
        del clusters[i]
    return merges


def _splits(clusters: list[frozenset], k: int) -> set[frozenset]:
    """Non-trivial bipartitions of an unrooted tree from its rooted clusters: both sides ≥ 2 leaves, each named
    by the side without leaf 0 (so a cluster and its complement are one split)."""
    everything = frozenset(range(k))
    return {c if 0 not in c else everything - c for c in clusters if 2 <= len(c) <= k - 2}


def hierarchy_rf(class_vectors: np.ndarray, tree: Tree, distance: str = "euc") -> Optional[float]:
    """Normalised Robinson–Foulds distance between the WPGMA trees of d and of d_T, both unrooted (ete3's
    ``compare(..., unrooted=True)["norm_rf"]``)::

        S(T) = non-trivial splits of T (bipartitions of the classes with ≥ 2 on each side)
        rf   = |S(T_d) △ S(T_dT)| / (|S(T_d)| + |S(T_dT)|)

    0: same topology; 1: no split in common. Both trees are binary (K − 3 splits each), the reference one
    resolved by class order where d_T ties. None without a tree or with fewer than 4 classes (no split).
    """
    tree = as_tree(tree)
    if tree is None or tree.num_classes < 4:
        return None
    k = tree.num_classes
    reference = _splits(wpgma_clusters(tree_distance_matrix(tree)), k)
    learned = _splits(wpgma_clusters(representative_distances(class_vectors, distance)), k)
    total = len(reference) + len(learned)
    return len(reference ^ learned) / total if total else None
