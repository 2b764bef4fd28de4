"""Soft labels equal the official code on identical inputs.

Official: GitHub fiveai/making-better-mistakes at commit f0bb7d0a7c4a9c7c9517045a4be4446e9baf824f,
``better_mistakes/model/labels.py`` (``make_all_soft_labels``, ``make_batch_soft_labels``, re-typed below
without ``.cuda``), the loss ``nn.KLDivLoss()`` of ``scripts/start_training.py`` applied in
``better_mistakes/model/run_xent.py`` to ``log_softmax(output)``. The distances are MBM's "ilsvrc" ones, the
LCA height (``DistanceDict``: 0 on the diagonal).
"""
import pytest
import torch

from method_trees import trees
from src.models.method import NetOutput
from src.models.soft_labels import SoftLabels, soft_label_loss, soft_label_matrix

COMMIT = "f0bb7d0a7c4a9c7c9517045a4be4446e9baf824f"


def make_all_soft_labels(distances, classes, hardness):
    distance_matrix = torch.Tensor([[distances[c1, c2] for c1 in classes] for c2 in classes])
    max_distance = torch.max(distance_matrix)
    distance_matrix /= max_distance
    soft_labels = torch.exp(-hardness * distance_matrix) / torch.sum(torch.exp(-hardness * distance_matrix), dim=0)
    return soft_labels


def make_batch_soft_labels(all_soft_labels, target, num_classes, batch_size):
    soft_labels = torch.zeros((batch_size, num_classes), dtype=torch.float32)
    for i in range(batch_size):
        soft_labels[i, :] = all_soft_labels[:, target[i]]
    return soft_labels


def official_loss(logits, target, tree, beta):
    index = {c: i for i, c in enumerate(tree.class_names)}
    distances = {(a, b): int(tree.lca_heights[index[a], index[b]]) for a in tree.class_names for b in tree.class_names}
    all_soft = make_all_soft_labels(distances, list(tree.class_names), beta)
    output = torch.nn.functional.log_softmax(logits, dim=1)
    target_distribution = make_batch_soft_labels(all_soft, target, tree.num_classes, len(target))
    return torch.nn.KLDivLoss()(output, target_distribution), all_soft


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")   # the official nn.KLDivLoss() default
@pytest.mark.parametrize("name", ["digits_case1", "three_levels", "cifar100"])
@pytest.mark.parametrize("beta", [4.0, 30.0])
def test_soft_labels_equal_official_code(name, beta):
    tree = trees()[name]
    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(64, tree.num_classes, generator=g)
    target = torch.randint(0, tree.num_classes, (64,), generator=g)
    expected, all_soft = official_loss(logits, target, tree, beta)
    s = soft_label_matrix(tree.lca_heights, beta)
    torch.testing.assert_close(torch.as_tensor(s, dtype=torch.float32), all_soft, atol=1e-6, rtol=0)
    method = SoftLabels(beta=beta)
    method.tree = tree
    ours = method.loss(NetOutput(logits), target, torch.zeros_like(target))
    assert abs(ours.item() - expected.item()) < 1e-6
    # batchmean is K times the code's elementwise mean
    batchmean = soft_label_loss(logits, target, torch.as_tensor(s, dtype=torch.float32), "batchmean")
    torch.testing.assert_close(batchmean, expected * tree.num_classes, atol=1e-5, rtol=1e-6)


def test_soft_label_of_a_two_level_tree_is_hand_derived():
    """case1 on digits, class 0 in a superclass of m classes: q(0) ∝ 1, q(same superclass) ∝ e^{−β/2},
    q(other) ∝ e^{−β}."""
    tree = trees()["digits_case1"]
    t = tree.table("superclass")
    m = t.count(t[0])
    beta = 4.0
    z = 1 + (m - 1) * torch.exp(torch.tensor(-beta / 2)) + (10 - m) * torch.exp(torch.tensor(-beta))
    s = torch.as_tensor(soft_label_matrix(tree.lca_heights, beta), dtype=torch.float32)
    assert s[0, 0].item() == pytest.approx((1 / z).item(), rel=1e-6)
    other = next(c for c in range(10) if t[c] != t[0])
    assert s[other, 0].item() == pytest.approx((torch.exp(torch.tensor(-beta)) / z).item(), rel=1e-6)


def make_batch_onehot_labels(target, num_classes, batch_size):
    onehot_labels = torch.zeros((batch_size, num_classes), dtype=torch.float32)
    for i in range(batch_size):
        onehot_labels[i, target[i]] = 1.0
    return onehot_labels


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
@pytest.mark.parametrize("name", ["digits_case1", "cifar100"])
def test_beta_zero_is_one_hot_as_the_official_code(name):
    """β = 0: the code's ``opts.soft_labels = opts.beta != 0`` (``scripts/start_training.py``) turns soft labels off,
    and ``run_xent.py`` trains on ``make_batch_onehot_labels`` (``labels.py``): the loss is CE / K, not uniform
    targets (which would ignore the label)."""
    tree = trees()[name]
    g = torch.Generator().manual_seed(5)
    logits = 3 * torch.randn(16, tree.num_classes, generator=g)
    target = torch.randint(0, tree.num_classes, (16,), generator=g)
    expected = torch.nn.KLDivLoss()(torch.nn.functional.log_softmax(logits, 1),
                                    make_batch_onehot_labels(target, tree.num_classes, len(target)))
    method = SoftLabels(beta=0.0)
    method.tree = tree
    ours = method.loss(NetOutput(logits), target, torch.zeros_like(target))
    assert abs(ours.item() - expected.item()) < 1e-6
    torch.testing.assert_close(ours, torch.nn.functional.cross_entropy(logits, target) / tree.num_classes)
