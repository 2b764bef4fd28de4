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

At 10,000 classes (docs/performance.md, "Metrics at 10,000 classes"): d_T is read from the tree's one uint8
LCA-height matrix, the correlations are taken a block of columns at a time, WPGMA costs O(K²) (``wpgma_merges``)
and the splits are compared by hashes of their leaf sets.
"""
from typing import Optional, Union

import numpy as np
from scipy.stats import rankdata

from src.data.tree import ClassTree, as_tree

COLUMNS_PER_BLOCK = 256  # classes whose columns ``hierarchy_mean_corr`` ranks at once: (K, 256) arrays
SPLIT_HASH_SEED = 20240624
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
    # A block of columns at a time (no float (K, K) matrix): ρ_i is the Pearson correlation of the columns' average
    # ranks, which is what spearmanr computes.
    w, heights, k = _normalised(class_vectors), tree.lca_heights, tree.num_classes
    rho = []
    for start in range(0, k, COLUMNS_PER_BLOCK):
        cols = np.arange(start, min(start + COLUMNS_PER_BLOCK, k))
        d, d_t = _distance_columns(w, cols, distance), heights[:, cols]
        rho.append(_column_correlations(d, d_t))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.arctanh(np.concatenate(rho))
        if np.all(np.isnan(z)):
            return None
        mean = float(np.tanh(np.nanmean(z)))
    return mean if np.isfinite(mean) else None


def _normalised(class_vectors: np.ndarray) -> np.ndarray:
    w = np.asarray(class_vectors, dtype=np.float64)
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def _distance_columns(w: np.ndarray, cols: np.ndarray, distance: str) -> np.ndarray:
    """Columns ``cols`` of ``representative_distances`` (K, len(cols)), from normalised vectors."""
    cos = np.clip(w @ w[cols].T, -1.0, 1.0)
    d = np.arccos(cos) if distance == "arccos" else np.sqrt(2.0 - 2.0 * cos)
    d[cols, np.arange(len(cols))] = 0.0
    return d


def _column_correlations(d: np.ndarray, d_t: np.ndarray) -> np.ndarray:
    """Spearman's ρ of each column pair (average ranks); NaN where either column is constant."""
    constant = (np.ptp(d, axis=0) == 0) | (np.ptp(d_t, axis=0) == 0)
    a, b = rankdata(d, axis=0), rankdata(d_t, axis=0)
    a -= a.mean(0)
    b -= b.mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))
    return np.where(constant, np.nan, np.clip(rho, -1.0, 1.0))


def wpgma_merges(d: np.ndarray, copy: bool = True) -> list[tuple[int, int]]:
    """The merges of Biopython's ``DistanceTreeConstructor.upgma`` on d (a port), as (i, j), j < i: the slots of the
    two clusters, numbered as the classes; the merged cluster keeps slot j.

    Each step merges the closest pair; ties go to the last pair in the scan order of the lower triangle (row i,
    then column j < i), since the code keeps a pair when ``min_dist >= d[i, j]``. The merged cluster's distance to
    every other is the plain mean (d_ik + d_jk)/2: WPGMA, whatever the name. The code deletes row and column i,
    which keeps the order of the rest: the slots here keep it too. Each row caches its minimum (and the last column
    holding it), so a step costs O(K) rather than a scan of the whole triangle: O(K²) in all, 10,000 classes in
    seconds. ``copy=False`` works in d itself (float64), which it overwrites.
    """
    d = np.array(d, dtype=np.float64) if copy or np.asarray(d).dtype != np.float64 else d
    k = len(d)
    np.fill_diagonal(d, np.inf)  # only j < i is read; the diagonal never is
    row_min, row_arg = np.full(k, np.inf), np.zeros(k, dtype=np.int64)
    active = np.ones(k, dtype=bool)

    def recompute(x: int) -> None:
        if x:
            row = d[x, :x]
            last = x - 1 - int(np.argmin(row[::-1]))  # the last column holding the minimum
            row_min[x], row_arg[x] = row[last], last

    for x in range(1, k):
        recompute(x)
    merges = []
    for _ in range(k - 1):
        i = int(np.flatnonzero(row_min == row_min.min())[-1])
        j = int(row_arg[i])
        merges.append((i, j))
        merged = (d[i] + d[j]) / 2          # inactive slots hold inf and stay inf
        merged[j] = np.inf
        d[j, :] = merged
        d[:, j] = merged
        d[i, :] = np.inf
        d[:, i] = np.inf
        active[i], row_min[i] = False, np.inf
        recompute(j)
        below = np.flatnonzero(active[j + 1:]) + j + 1   # rows whose column j changed (or lost column i)
        stale = (row_arg[below] == j) | (row_arg[below] == i)
        value = d[below, j]
        better = ~stale & ((value < row_min[below]) | ((value == row_min[below]) & (j > row_arg[below])))
        row_min[below[better]], row_arg[below[better]] = value[better], j
        for x in below[stale]:
            recompute(int(x))
    return merges


def wpgma_clusters(d: np.ndarray) -> list[frozenset]:
    """The clusters of Biopython's ``DistanceTreeConstructor.upgma`` tree of d, merge by merge (``wpgma_merges``)."""
    members = [frozenset([i]) for i in range(len(d))]
    clusters = []
    for i, j in wpgma_merges(d):
        members[j] = members[j] | members[i]
        clusters.append(members[j])
    return clusters


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
    reference = _split_keys(wpgma_merges(tree.lca_heights), k)  # WPGMA of h = of 2h (same merges, halved heights)
    learned = _split_keys(wpgma_merges(representative_distances(class_vectors, distance), copy=False), k)
    total = len(reference) + len(learned)
    return len(reference ^ learned) / total if total else None


def _split_keys(merges: list[tuple[int, int]], k: int) -> set[tuple[int, int]]:
    """The non-trivial splits (both sides ≥ 2 leaves) of the clusters the merges make, each named by a 128-bit hash of its side without leaf 0
    (the sum of its leaves' random 64-bit pairs, mod 2^64): no set of up to K leaves per cluster, O(K) in all. Two
    different splits share a name with a chance below K² / 2^128."""
    leaf = np.random.default_rng(SPLIT_HASH_SEED).integers(0, 2**64 - 1, size=(k, 2), dtype=np.uint64, endpoint=True)
    total = leaf.sum(0)  # uint64: wraps mod 2^64
    hashes, size, has_zero = leaf.copy(), np.ones(k, dtype=np.int64), np.arange(k) == 0
    keys = set()
    for i, j in merges:
        hashes[j] += hashes[i]
        size[j] += size[i]
        has_zero[j] |= has_zero[i]
        if 2 <= size[j] <= k - 2:
            side = total - hashes[j] if has_zero[j] else hashes[j]
            keys.add((int(side[0]), int(side[1])))
    return keys
