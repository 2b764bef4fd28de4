import numpy as np
import pytest

from src.hierarchy import hierarchy_mean_corr, hierarchy_rf, representative_distances, tree_distance_matrix

A = 0.3
# classes 0, 1 around one axis pair, 2, 3 around another: within-pair distances equal, across all equal
TREE_VECTORS = np.array([[1, A, 0, 0], [1, -A, 0, 0], [0, 0, 1, A], [0, 0, 1, -A]], dtype=float)


def test_tree_distances():
    np.testing.assert_array_equal(tree_distance_matrix([0, 0, 1, 1, 0]), [
        [0, 2, 4, 4, 2], [2, 0, 4, 4, 2], [4, 4, 0, 2, 4], [4, 4, 2, 0, 4], [2, 2, 4, 4, 0]])


def test_representative_distances_are_chords_or_angles_of_normalised_vectors():
    w = np.array([[2.0, 0], [0, 5.0], [-1.0, 0]])
    np.testing.assert_allclose(representative_distances(w), [[0, 2 ** 0.5, 2], [2 ** 0.5, 0, 2 ** 0.5],
                                                            [2, 2 ** 0.5, 0]], atol=1e-12)
    np.testing.assert_allclose(representative_distances(w, "arccos")[0], [0, np.pi / 2, np.pi], atol=1e-12)


@pytest.mark.parametrize("distance", ["euc", "arccos"])
def test_vectors_that_reproduce_the_tree(distance):
    table = [0, 0, 1, 1]
    assert hierarchy_mean_corr(TREE_VECTORS, table, distance) == pytest.approx(1.0, abs=1e-9)
    assert hierarchy_mean_corr(TREE_VECTORS, table, distance, include_self=True) == pytest.approx(1.0, abs=1e-9)
    assert hierarchy_rf(TREE_VECTORS, table, distance) == 0.0


def test_tree_breaking_arrangement():
    # the same vectors against superclasses {0, 2}, {1, 3}: for every class the ranks of its distances
    # (near, far, far) against the tree's (4, 2, 4) give ρ = −1/2; the splits {0,1}|{2,3} and {0,2}|{1,3}
    # share nothing, rf = 2 / (1 + 1)
    table = [0, 1, 0, 1]
    assert hierarchy_mean_corr(TREE_VECTORS, table) == pytest.approx(-0.5, abs=1e-9)
    assert hierarchy_rf(TREE_VECTORS, table) == 1.0


def test_rf_of_a_binary_upgma_tree_against_two_superclasses():
    # six classes on the unit circle at these angles: UPGMA joins (0,1), (3,4), then 2 and 5, a binary tree
    # with splits {0,1}, {3,4}, {0,1,2}|{3,4,5}; the superclass tree has only {0,1,2}|{3,4,5}: rf = 2 / (3 + 1)
    angles = np.radians([0, 10, 30, 100, 112, 135])
    w = np.stack([np.cos(angles), np.sin(angles)], 1)
    assert hierarchy_rf(w, [0, 0, 0, 1, 1, 1]) == 0.5
    # each class's own superclass is nearest, but d_T ties them: ρ_i = Pearson([1..5], [1.5,1.5,4,4,4]) = √3/2
    assert hierarchy_mean_corr(w, [0, 0, 0, 1, 1, 1]) == pytest.approx(3 ** 0.5 / 2, abs=1e-9)
    # superclasses {0,1}, {2,3,4,5}: one split {0,1}|{2,3,4,5}, which UPGMA has; its other two are extra
    assert hierarchy_rf(w, [0, 0, 1, 1, 1, 1]) == 0.5
    # superclasses {0,3}, {1,4}, {2,5}: three splits, none learned: 6 / 6
    assert hierarchy_rf(w, [0, 1, 2, 0, 1, 2]) == 1.0


def test_undefined_cases_are_none():
    assert hierarchy_mean_corr(TREE_VECTORS, None) is None and hierarchy_rf(TREE_VECTORS, None) is None
    assert hierarchy_mean_corr(TREE_VECTORS, [0, 0, 0, 0]) is None       # one superclass: constant d_T
    assert hierarchy_mean_corr(TREE_VECTORS, [0, 1, 2, 3]) is None       # one class per superclass
    assert hierarchy_rf(TREE_VECTORS, [0, 0, 0, 0]) is None              # superclass tree without a split
    assert hierarchy_rf(TREE_VECTORS[:3], [0, 0, 1]) is None             # 3 leaves: no split at all
    assert hierarchy_mean_corr(np.ones((4, 3)), [0, 0, 1, 1]) is None    # identical vectors: no ρ defined
