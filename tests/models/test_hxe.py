"""HXE equals the official code on identical inputs.

Official: GitHub fiveai/making-better-mistakes at commit f0bb7d0a7c4a9c7c9517045a4be4446e9baf824f,
``better_mistakes/model/losses.py`` (``HierarchicalLLLoss``, ``HierarchicalCrossEntropyLoss``) and
``better_mistakes/trees.py`` (``get_exponential_weighting``), re-typed below (nltk's Tree replaced by the few
methods they use, ``method_trees.NltkTree``).
"""
from copy import deepcopy
from math import exp, fsum

import pytest
import torch

from method_trees import NltkTree, as_nltk, trees
from src.models.hxe import HXE, hierarchical_cross_entropy
from src.models.method import NetOutput

COMMIT = "f0bb7d0a7c4a9c7c9517045a4be4446e9baf824f"


def get_label(node):
    return node.label() if isinstance(node, NltkTree) else node


def get_exponential_weighting(hierarchy, value, normalize=True):
    weights = deepcopy(hierarchy)
    all_weights = []
    for p in weights.treepositions():
        node = weights[p]
        weight = exp(-value * len(p))
        all_weights.append(weight)
        if isinstance(node, NltkTree):
            node.set_label(weight)
        else:
            weights[p] = weight
    total = fsum(all_weights)
    if normalize:
        for p in weights.treepositions():
            node = weights[p]
            if isinstance(node, NltkTree):
                node.set_label(node.label() / total)
            else:
                weights[p] /= total
    return weights


class HierarchicalLLLoss(torch.nn.Module):
    def __init__(self, hierarchy, classes, weights):
        super().__init__()
        assert hierarchy.treepositions() == weights.treepositions()
        positions_leaves = {get_label(hierarchy[p]): p for p in hierarchy.treepositions("leaves")}
        num_classes = len(positions_leaves)
        positions_leaves = [positions_leaves[c] for c in classes]
        positions_edges = hierarchy.treepositions()[1:]
        index_map_leaves = {positions_leaves[i]: i for i in range(len(positions_leaves))}
        index_map_edges = {positions_edges[i]: i for i in range(len(positions_edges))}
        edges_from_leaf = [[index_map_edges[position[:i]] for i in range(len(position), 0, -1)]
                           for position in positions_leaves]
        num_edges = max([len(p) for p in edges_from_leaf])

        def get_leaf_positions(position):
            node = hierarchy[position]
            return node.treepositions("leaves") if isinstance(node, NltkTree) else [()]

        leaf_indices = [[index_map_leaves[position + leaf] for leaf in get_leaf_positions(position)]
                        for position in positions_edges]
        self.onehot_den = torch.zeros([num_classes, num_classes, num_edges])
        self.onehot_num = torch.zeros([num_classes, num_classes, num_edges])
        self.weights = torch.zeros([num_classes, num_edges])
        for i in range(num_classes):
            for j, k in enumerate(edges_from_leaf[i]):
                self.onehot_num[i, leaf_indices[k], j] = 1.0
                self.weights[i, j] = get_label(weights[positions_edges[k]])
            for j, k in enumerate(edges_from_leaf[i][1:]):
                self.onehot_den[i, leaf_indices[k], j] = 1.0
            self.onehot_den[i, :, j + 1] = 1.0

    def forward(self, inputs, target):
        inputs = torch.unsqueeze(inputs, 1)
        num = torch.squeeze(torch.bmm(inputs, self.onehot_num[target]))
        den = torch.squeeze(torch.bmm(inputs, self.onehot_den[target]))
        idx = num != 0
        num[idx] = -torch.log(num[idx] / den[idx])
        num = torch.sum(torch.flip(self.weights[target] * num, dims=[1]), dim=1)
        return torch.mean(num)


def official_hxe(logits, target, tree, alpha):
    hierarchy = as_nltk(tree)
    loss = HierarchicalLLLoss(hierarchy, list(tree.class_names), get_exponential_weighting(hierarchy, alpha))
    return loss(torch.nn.functional.softmax(logits, 1), target)


@pytest.mark.parametrize("name", ["digits_case1", "three_levels", "cifar100"])
@pytest.mark.parametrize("alpha", [0.1, 0.6])
def test_hxe_equals_official_code(name, alpha):
    tree = trees()[name]
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(64, tree.num_classes, generator=g)
    target = torch.randint(0, tree.num_classes, (64,), generator=g)
    ours = hierarchical_cross_entropy(logits, target, tree, alpha)
    assert abs(ours.item() - official_hxe(logits, target, tree, alpha).item()) < 1e-6
    # a target class with zero probability in float32: the code's num != 0 mask drops that term, not a NaN
    saturated = logits.clone()
    saturated[0, target[0]] = -200.0
    torch.testing.assert_close(hierarchical_cross_entropy(saturated, target, tree, alpha),
                               official_hxe(saturated, target, tree, alpha), atol=1e-6, rtol=0)


def test_hxe_at_alpha_zero_on_a_two_level_tree_is_hand_derived():
    """α = 0, class -> superclass -> root: λ = 1/(1 + S + K) for both terms, and
    −log(p_y/p_s) − log(p_s/1) = −log p_y: HXE = CE / (1 + S + K)."""
    tree = trees()["digits_case1"]
    logits, target = torch.randn(8, 10), torch.arange(8)
    s = len(tree.levels[0].group_names)
    expected = torch.nn.functional.cross_entropy(logits, target) / (1 + s + 10)
    torch.testing.assert_close(hierarchical_cross_entropy(logits, target, tree, 0.0), expected)


def test_method_reads_the_tree_set_by_build_and_backpropagates():
    tree = trees()["three_levels"]
    method = HXE(alpha=0.1)
    method.tree = tree
    logits = torch.randn(5, 10, requires_grad=True)
    loss = method.loss(NetOutput(logits), torch.tensor([0, 3, 5, 7, 9]), torch.zeros(5, dtype=torch.long))
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_saturated_logits_give_the_official_gradient_not_nan():
    """Issue input: 4 classes, groups [0, 0, 1, 1], float32 logits [[-200, -200, 0, 0]], label 0, α = 0.1. p_0 and
    its group's p underflow to 0: the official code drops both terms (``num != 0``): loss 0, gradient 0, not NaN."""
    from src.data.tree import ClassTree

    tree = ClassTree.from_table("t", [0, 0, 1, 1], ["a", "b", "c", "d"])
    target = torch.tensor([0])
    ours_logits = torch.tensor([[-200.0, -200.0, 0.0, 0.0]], requires_grad=True)
    official_logits = ours_logits.detach().clone().requires_grad_(True)
    ours = hierarchical_cross_entropy(ours_logits, target, tree, 0.1)
    official = official_hxe(official_logits, target, tree, 0.1)
    ours.backward()
    official.backward()
    assert ours.item() == official.item() == 0.0
    torch.testing.assert_close(ours_logits.grad, official_logits.grad, atol=0, rtol=0)
    assert torch.equal(official_logits.grad, torch.zeros(1, 4))
    # one such row among finite ones leaves the batch's gradient finite, and equal to the code's
    logits = torch.cat([torch.tensor([[-200.0, -200.0, 0.0, 0.0]]), torch.randn(7, 4)]).requires_grad_(True)
    official_logits = logits.detach().clone().requires_grad_(True)
    target = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    hierarchical_cross_entropy(logits, target, tree, 0.1).backward()
    official_hxe(official_logits, target, tree, 0.1).backward()
    torch.testing.assert_close(logits.grad, official_logits.grad, atol=1e-7, rtol=1e-6)


# An isa tree whose leaves sit at depths 2 to 4 (tieredImageNet-H's sit at 3 to 12), with a real one-child node
# (z -> w) as WordNet has: MBM's nltk tree is the isa tree itself; the project pads it (src.data.mbm.isa_tree).
# (No leaf right under the root: there the official code's denominator column is off by one, j of the loop before.)
UNEVEN_ISA = [("r", "a"), ("r", "x"), ("r", "z"), ("a", "b"), ("a", "l2"), ("b", "d"), ("b", "l3"), ("d", "l4"),
              ("d", "l5"), ("x", "y"), ("x", "l1"), ("y", "l6"), ("y", "l7"), ("y", "e"), ("e", "l8"), ("e", "l9"),
              ("z", "w"), ("w", "m1"), ("w", "m2")]


def isa_nltk(isa, node="r"):
    children = [c for p, c in isa if p == node]
    return NltkTree(node, [isa_nltk(isa, c) if any(p == c for p, _ in isa) else c for c in children])


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.9])
def test_uneven_tree_counts_each_real_node_once_as_the_official_code(tmp_path, alpha):
    """On a padded tree, loss and gradient equal MBM's on the unpadded tree: the normaliser counts the 20 real
    nodes, not the 29 of the padded tree (tieredImageNet-H: 843, not 3,310); the padded edges' terms are log 1 = 0."""
    from src.data.mbm import isa_tree
    from src.data.random_tree import permuted_tree

    (tmp_path / "isa.txt").write_text("".join(f"{p} {c}\n" for p, c in UNEVEN_ISA))
    tree = isa_tree("uneven", tmp_path / "isa.txt")
    assert len(tree.levels) == 3 and sum(tree.node_counts) == 20 == len(isa_nltk(UNEVEN_ISA).treepositions())
    assert permuted_tree(tree, 0).node_counts == tree.node_counts          # the random-tree control's too
    g = torch.Generator().manual_seed(4)
    logits = (3 * torch.randn(64, tree.num_classes, generator=g)).requires_grad_(True)
    target = torch.randint(0, tree.num_classes, (64,), generator=g)
    official_logits = logits.detach().clone().requires_grad_(True)
    hierarchy = isa_nltk(UNEVEN_ISA)
    official = HierarchicalLLLoss(hierarchy, list(tree.class_names), get_exponential_weighting(hierarchy, alpha))(
        torch.nn.functional.softmax(official_logits, 1), target)
    ours = hierarchical_cross_entropy(logits, target, tree, alpha)
    torch.testing.assert_close(ours, official, atol=1e-7, rtol=1e-6)
    ours.backward()
    official.backward()
    torch.testing.assert_close(logits.grad, official_logits.grad, atol=1e-8, rtol=1e-5)


@pytest.mark.parametrize("name", ["digits_case1", "three_levels", "cifar100"])
def test_balanced_trees_count_every_node(name):
    tree = trees()[name]
    assert sum(tree.node_counts) == len(as_nltk(tree).treepositions())
