"""ProxyDR's metrics as its official eval_cifar100.py computes them, checked by hand (src/evaluation/hierarchy.py)."""
import numpy as np
import pytest
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform

from src.evaluation.hierarchy import (hierarchy_mean_corr, hierarchy_rf, representative_distances, tree_distance_matrix,
                           wpgma_clusters)
from src.data.tree import ClassTree, Level

A = 0.3
# classes 0, 1 around one axis pair, 2, 3 around another: within-pair distances equal, across all equal
TREE_VECTORS = np.array([[1, A, 0, 0], [1, -A, 0, 0], [0, 0, 1, A], [0, 0, 1, -A]], dtype=float)
# six classes on the unit circle at these angles (degrees): each class's three nearest are its own half
CIRCLE = np.radians([0, 10, 30, 100, 112, 135])
CIRCLE_VECTORS = np.stack([np.cos(CIRCLE), np.sin(CIRCLE)], 1)


def test_tree_distances_count_the_edges_of_the_path():
    np.testing.assert_array_equal(tree_distance_matrix([0, 0, 1, 1, 0]), [
        [0, 2, 4, 4, 2], [2, 0, 4, 4, 2], [4, 4, 0, 2, 4], [4, 4, 2, 0, 4], [2, 2, 4, 4, 0]])
    # three levels: pairs {0,1} {2,3} {4} under halves {0,1,2,3} {4}
    tree = ClassTree("t", "abcde", [Level("pair", (0, 0, 1, 1, 2), ("p", "q", "r")),
                                    Level("half", (0, 0, 0, 0, 1), ("x", "y"))])
    assert tree_distance_matrix(tree)[0].tolist() == [0, 2, 4, 4, 6]  # self, same pair, same half, root


def test_representative_distances_are_chords_or_angles_of_normalised_vectors():
    w = np.array([[2.0, 0], [0, 5.0], [-1.0, 0]])
    np.testing.assert_allclose(representative_distances(w), [[0, 2 ** 0.5, 2], [2 ** 0.5, 0, 2 ** 0.5],
                                                            [2, 2 ** 0.5, 0]], atol=1e-12)
    np.testing.assert_allclose(representative_distances(w, "arccos")[0], [0, np.pi / 2, np.pi], atol=1e-12)


@pytest.mark.parametrize("distance", ["euc", "arccos"])
def test_vectors_that_reproduce_the_tree(distance):
    # every whole column ranks like the tree's (self 0, pair-mate, the two others tied): ρ = 1, atanh = ∞,
    # tanh(∞) = 1, as the code's fisher_corr gives
    assert hierarchy_mean_corr(TREE_VECTORS, [0, 0, 1, 1], distance) == 1.0
    assert hierarchy_rf(TREE_VECTORS, [0, 0, 1, 1], distance) == 0.0


def test_the_self_distance_is_part_of_each_column():
    # superclasses {0, 2}, {1, 3}. Class 0's column: learned (0, a, b, b), tree (0, 4, 2, 4); ranks
    # (1, 2, 3.5, 3.5) and (1, 3.5, 2, 3.5), centred (−1.5, −.5, 1, 1)·(−1.5, 1, −.5, 1) = 2.25 over 4.5: ρ = 1/2
    # for every class. Without the self-distance (the previous definition) it was −1/2.
    assert hierarchy_mean_corr(TREE_VECTORS, [0, 1, 0, 1]) == pytest.approx(0.5, abs=1e-12)
    # learned split {0,1}|{2,3}; the reference WPGMA tree merges {1,3} (the last tie), then {0,2}: rf = 2 / 2
    assert hierarchy_rf(TREE_VECTORS, [0, 1, 0, 1]) == 1.0


def test_mean_corr_on_the_circle():
    # halves {0,1,2}, {3,4,5}. Column 0: ranks (1..6) against the tree's (0,2,2,4,4,4) ranks (1,2.5,2.5,5,5,5);
    # centred dot 6.25 + 1.5 + .5 + .75 + 2.25 + 3.75 = 15, norms² 17.5 and 15: ρ = √(6/7), every column alike
    rho = np.sqrt(6 / 7)
    assert hierarchy_mean_corr(CIRCLE_VECTORS, [0, 0, 0, 1, 1, 1]) == pytest.approx(rho, abs=1e-12)


def test_rf_builds_the_reference_tree_as_biopython_does():
    # Reference: WPGMA on d_T (2 within a half, 4 across), ties to the last pair in the lower-triangle scan:
    # {4,5}, then {3,4,5}, then {1,2}, then {0,1,2}: splits {4,5}, {1,2}, {0,1,2}|{3,4,5}.
    reference = wpgma_clusters(tree_distance_matrix([0, 0, 0, 1, 1, 1]))
    assert reference == [frozenset({4, 5}), frozenset({3, 4, 5}), frozenset({1, 2}), frozenset({0, 1, 2}),
                         frozenset(range(6))]
    # Learned: {0,1} (10°), {3,4} (12°), {0,1,2} (25° on average), {3,4,5} (29°): splits {0,1}, {3,4},
    # {0,1,2}|{3,4,5}. One of three in common: rf = 4 / 6.
    assert hierarchy_rf(CIRCLE_VECTORS, [0, 0, 0, 1, 1, 1]) == pytest.approx(2 / 3, abs=1e-12)


def test_wpgma_matches_scipy_weighted_linkage_without_ties():
    rng = np.random.default_rng(0)
    d = squareform(rng.random(45))  # 10 points, distinct distances
    z = linkage(squareform(d), method="weighted")
    members = {i: frozenset([i]) for i in range(10)}
    for m, (a, b, _, _) in enumerate(z):
        members[10 + m] = members[int(a)] | members[int(b)]
    assert set(wpgma_clusters(d)) == {members[10 + m] for m in range(9)}
    average = linkage(squareform(d), method="average")  # true UPGMA is another tree here
    assert not np.allclose(average[:, 2], z[:, 2])


def test_undefined_cases_are_none():
    assert hierarchy_mean_corr(TREE_VECTORS, None) is None and hierarchy_rf(TREE_VECTORS, None) is None
    assert hierarchy_rf(TREE_VECTORS[:3], [0, 0, 1]) is None             # 3 leaves: no split at all
    assert hierarchy_mean_corr(TREE_VECTORS[:2], [0, 1]) is None         # 2 classes
    assert hierarchy_mean_corr(np.ones((4, 3)), [0, 0, 1, 1]) is None    # identical vectors: no ρ defined
