"""HAFrame's frame and loss equal the official code on identical inputs.

Official: GitHub ltong1130ztr/HAFrame at commit abe73b43dd0122a727ca87029e325ba854b18c16: ``HAFrame/solve_HAF.py``
(``map_hdistance_to_cosine_similarity_exponential_decay``, ``find_max_separation_matrix_factorization_solver``,
``cls_weights_matrix_factorization_solver``, ``distance_matrix_to_haf_cls_weights``) and ``HAFrame/losses.py``
(``mixing_ratio_scheduler``, ``GeneralSquareCosineSimilarityLoss``, ``MixedLoss_CEandGeneralSCSL``), re-typed
below (prints dropped). The distances are the "ilsvrc" ones, the LCA height.
"""
import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

from method_trees import trees
from src.models import PreActResNet
from src.models.haframe import HAFrame, HAFrameHead, haf_frame, haframe_loss, mixing_ratio

COMMIT = "abe73b43dd0122a727ca87029e325ba854b18c16"


def map_exponential_decay(hdistance, gamma, min_similarity):
    assert min_similarity >= -1
    similarity_range = 1.0 - min_similarity
    return similarity_range * np.exp(-gamma * hdistance / np.max(hdistance)) + min_similarity


def find_max_separation(hdistance, num_classes, n_samples, gamma):
    ret_min_sim = float("inf")
    for s in np.linspace(-1.0 / (num_classes - 1), -1.0, n_samples):
        w, v = np.linalg.eigh(map_exponential_decay(hdistance, gamma, s))
        w_prime = w.copy()
        w_prime[np.abs(w) < 1e-6] = 0
        if not np.min(w_prime) < 0:
            ret_min_sim = min(ret_min_sim, s)
    return ret_min_sim


def cls_weights_solver(num_features, num_classes, cos_similarity):
    w, v = np.linalg.eigh(cos_similarity)
    w_prime = w.copy()
    w_prime[np.abs(w) < 1e-6] = 0
    if np.min(w_prime) < 0:
        raise ValueError("cosine similarity matrix is not P.S.D.")
    d_sqrt = np.sqrt(np.diag(w_prime))
    tp = np.sqrt(2.0 / num_classes) * np.random.randn(num_features, num_classes)
    q, _ = np.linalg.qr(tp)
    return (q @ (d_sqrt @ v.T)).T


def distance_matrix_to_haf_cls_weights(hdist, num_features, gamma):
    num_classes = hdist.shape[0]
    similarity_min = find_max_separation(hdist, num_classes, 100, gamma)
    similarity_matrix = map_exponential_decay(hdist, gamma, similarity_min)
    return cls_weights_solver(num_features, num_classes, similarity_matrix), similarity_matrix, similarity_min


def mixing_ratio_scheduler(sargs, epoch):
    if sargs.loss_schedule == "linear-decrease":
        alpha = (1 - epoch / sargs.epochs)
        beta = 1.0 - alpha
    elif sargs.loss_schedule == "linear-increase":
        alpha = epoch / sargs.epochs
        beta = 1.0 - alpha
    elif sargs.loss_schedule == "cosine":
        p = float(sargs.loss_schedule_period)
        alpha = 0.5 * (1 - np.cos(2 * (np.pi / p) * epoch))
        beta = 1.0 - alpha
    elif sargs.loss_schedule == "cosine-linear-increase":
        p = float(sargs.loss_schedule_period)
        alpha = 0.5 * (1 - np.cos(2 * (np.pi / p) * epoch)) * epoch / sargs.epochs
        beta = 1.0 - alpha
    elif sargs.loss_schedule == "cosine-linear-decrease":
        p = float(sargs.loss_schedule_period)
        beta = 0.5 * (1 - np.cos(2 * (np.pi / p) * epoch)) * epoch / sargs.epochs
        alpha = 1.0 - beta
    else:
        alpha = float(sargs.loss_schedule)
        beta = 1.0 - alpha if alpha <= 1.0 else 1.0
    return beta, alpha


class GeneralSquareCosineSimilarityLoss(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, fixed_cls, x, y):
        sim = [torch.unsqueeze(nn.functional.cosine_similarity(fixed_cls[c], x, dim=1), dim=1)
               for c in range(self.num_classes)]
        sim = torch.cat(sim, dim=1)
        return torch.sum(torch.square(sim - y)) / y.size()[0]


def official_mixed_loss(beta, alpha, fixed_cls, x, y_scaler, y_simlabel):
    logits = torch.matmul(x, fixed_cls.T)
    return beta * nn.CrossEntropyLoss(reduction="mean")(logits, y_scaler) + \
        alpha * GeneralSquareCosineSimilarityLoss(fixed_cls.shape[0])(fixed_cls, x, y_simlabel)


@pytest.mark.parametrize("name, gamma", [("digits_case1", 2.0), ("digits_case1", 5.0), ("three_levels", 2.0),
                                         ("three_levels", 5.0), ("cifar100", 2.0)])
def test_haframe_frame_equals_official_code(name, gamma):
    hdist = trees()[name].lca_heights.astype(np.float64)
    np.random.seed(3)
    weights, similarity, _ = distance_matrix_to_haf_cls_weights(hdist, hdist.shape[0], gamma)
    ours, ours_similarity = haf_frame(hdist, gamma, seed=3)
    np.testing.assert_allclose(ours_similarity, similarity, atol=1e-6, rtol=0)
    np.testing.assert_allclose(ours, weights, atol=1e-6, rtol=0)
    # the frame realises the similarities: W Wᵀ = S, and S is as separated as the candidates allow
    np.testing.assert_allclose(ours @ ours.T, similarity, atol=1e-6)


@pytest.mark.parametrize("name", ["digits_case1", "cifar100"])
def test_haframe_loss_equals_official_code(name):
    tree = trees()[name]
    k = tree.num_classes
    frame, similarity = haf_frame(tree.lca_heights, 2.0, seed=0)
    frame, similarity = torch.as_tensor(frame, dtype=torch.float32), torch.as_tensor(similarity, dtype=torch.float32)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(32, k, generator=g)
    target = torch.randint(0, k, (32,), generator=g)
    beta, alpha = mixing_ratio(0.4)
    # y_simlabel as the code's make_batch_soft_labels: column y of the similarity matrix
    expected = official_mixed_loss(beta, alpha, frame, x, target, similarity[:, target].T)
    assert abs(haframe_loss(frame, x, target, similarity, beta, alpha).item() - expected.item()) < 1e-6


@pytest.mark.parametrize("schedule", ["0.4", "1.5", "linear-decrease", "linear-increase", "cosine",
                                      "cosine-linear-increase", "cosine-linear-decrease"])
def test_mixing_ratio_equals_official_code(schedule):
    for epoch in (0, 3, 7):
        sargs = SimpleNamespace(loss_schedule=schedule, epochs=10, loss_schedule_period=4)
        assert mixing_ratio(schedule, epoch, 10, 4) == pytest.approx(mixing_ratio_scheduler(sargs, epoch))


def test_method_replaces_the_classifier_with_the_fixed_frame():
    tree = trees()["digits_case1"]
    net = PreActResNet(10, 10, in_channels=1)
    method = HAFrame()
    method.tree = tree
    method.attach(net, 10, 0)
    assert isinstance(net.fc, HAFrameHead) and net.class_vectors() is net.fc.frame
    assert not any(p is net.fc.frame for p in net.parameters())          # the frame is not trained
    out = net(torch.randn(4, 1, 8, 8))
    torch.testing.assert_close(out.logits, net.fc.last_features @ net.fc.frame.T)
    label = torch.tensor([0, 1, 2, 3])
    loss = method.loss(out, label, label)
    loss.backward()
    assert torch.isfinite(loss) and net.conv.weight.grad.abs().sum() > 0


def test_a_named_schedule_follows_the_epochs_of_a_run(run_train):
    import pytorch_lightning as pl

    seen = []

    class Record(pl.Callback):
        def on_train_epoch_end(self, trainer, module):
            m = module.method
            seen.append((m.epoch, m.epochs, mixing_ratio(m.loss_schedule, m.epoch, m.epochs, m.loss_schedule_period)))

    run_train("method=haframe", "method.loss_schedule=linear-decrease", "trainer.max_epochs=2",
              "trainer.limit_train_batches=2", "trainer.limit_test_batches=1", callbacks=[Record()])
    # the code's linear-decrease: α = 1 − epoch/epochs, β = 1 − α
    assert seen == [(0, 2, (0.0, 1.0)), (1, 2, (0.5, 0.5))]  # hand-derived


def test_bad_schedules_are_one_line():
    from src.run.errors import ConfigError

    for kwargs in ({"loss_schedule": "sometimes"}, {"loss_schedule": "cosine"}, {"haf_gamma": 0}):
        with pytest.raises(ConfigError) as error:
            HAFrame(**kwargs)
        assert "\n" not in str(error.value)


def test_cifar100_tree_distances_are_haframes_distance_file():
    """HAFrame trains CIFAR-100 on ``data/cifar-l5/original/cifar_100_ilsvrc_distances.pkl.xz`` (classes named
    ``L5-<fine index>`` in ``MBM/scripts/start_training.py``). Its 100×100 matrix of distances between the classes
    (int64, row-major, 0 on the diagonal) has this SHA-256; our tree's LCA heights reproduce it."""
    official_sha256 = "668b061b09ae6904ae686681afd744b08dc7dde432f69398c2a647f546f84a40"
    heights = np.ascontiguousarray(trees()["cifar100"].lca_heights, dtype=np.int64)
    assert hashlib.sha256(heights.tobytes()).hexdigest() == official_sha256


def official_head_batchnorms(backbone, num_classes):
    """The BatchNorm1d layers of the official transformation head, in order (re-typed constructors, COMMIT):
    ``util/arch/wideresnet.py`` ``HAFrameWideResNet`` (CIFAR: ``self.bn2 = nn.BatchNorm1d(num_classes,
    momentum=0.001)``) and ``util/arch/HAF_resnet.py`` ``HAFrameResNet50`` (``nn.BatchNorm1d(num_classes)`` before
    ``NarrowResidualTransformationHead``); both heads' two ``PointResidualTransformationLayer`` keep the default."""
    first = nn.BatchNorm1d(num_classes, momentum=0.001) if backbone == "wideresnet" else nn.BatchNorm1d(num_classes)
    return [first] + [nn.BatchNorm1d(num_classes) for _ in range(4)]   # bn1, bn2 of two residual layers


@pytest.mark.parametrize("model, official", [("preact", "wideresnet"), ("resnet18", "resnet50"),
                                             ("resnet50", "resnet50")])
def test_head_batchnorm_momentum_follows_the_official_code_per_backbone(model, official):
    """The CIFAR ResNet (pre-activation, as the code's wide ResNet) takes the wide ResNet head's 0.001; the torchvision
    ResNets take the ResNet-50 head's 0.1: the running statistics move as the code's on the same batches."""
    from src.models.torchvision_resnet import TorchvisionResNet

    tree = trees()["digits_case1"]
    net = PreActResNet(10, 10, in_channels=1) if model == "preact" else TorchvisionResNet(model, 10, in_channels=1)
    method = HAFrame()
    method.tree = tree
    method.attach(net, 10, 0)
    ours = [m for m in net.fc.modules() if isinstance(m, nn.BatchNorm1d)]
    reference = official_head_batchnorms(official, 10)
    assert [m.momentum for m in ours] == [m.momentum for m in reference]
    x = torch.randn(8, 10)
    ours[0](x), reference[0](x)
    torch.testing.assert_close(ours[0].running_mean, reference[0].running_mean)


@pytest.mark.parametrize("schedule", ["0.4", "0.9"])
def test_method_loss_on_an_attached_head_is_the_official_mixed_loss(schedule):
    """``HAFrame.loss`` (the network's head, the method's schedule) against the official mixed loss with the official
    scheduler's (β, α): β weighs CE, α the cosine loss; swapped, 0.4 gives 0.6·CE + 0.4·cos, not 0.4·CE + 0.6·cos."""
    tree = trees()["digits_case1"]
    net = PreActResNet(10, 10, in_channels=1)
    method = HAFrame(loss_schedule=schedule)
    method.tree = tree
    method.attach(net, 10, 0)
    label = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    ours = method.loss(net(torch.randn(8, 1, 8, 8)), label, label)
    beta, alpha = mixing_ratio_scheduler(SimpleNamespace(loss_schedule=schedule, epochs=1), 0)
    frame, similarity, x = net.fc.frame, net.fc.similarity, net.fc.last_features
    expected = official_mixed_loss(beta, alpha, frame, x, label, similarity[:, label].T)
    assert abs(ours.item() - expected.item()) < 1e-6
    swapped = official_mixed_loss(alpha, beta, frame, x, label, similarity[:, label].T)
    assert abs(swapped.item() - expected.item()) > 1e-3          # the input tells the two apart


@pytest.mark.parametrize("model, momentum", [("preact", 0.1), ("preact", 0.02), ("resnet18", 0.001)])
def test_head_batchnorm_momentum_is_overridden_by_the_knob(model, momentum):
    """``method.bn_momentum`` replaces the official value of the head's first BatchNorm1d (the one the code sets per
    backbone) on either backbone; the residual layers' keep PyTorch's 0.1. One batch moves the running mean to
    momentum · batch mean, from 0."""
    from src.models.torchvision_resnet import TorchvisionResNet

    net = PreActResNet(10, 10, in_channels=1) if model == "preact" else TorchvisionResNet(model, 10, in_channels=1)
    method = HAFrame(bn_momentum=momentum)
    method.tree = trees()["digits_case1"]
    method.attach(net, 10, 0)
    ours = [m for m in net.fc.modules() if isinstance(m, nn.BatchNorm1d)]
    assert [m.momentum for m in ours] == [momentum, 0.1, 0.1, 0.1, 0.1]
    x = torch.randn(8, 10)
    ours[0](x)
    torch.testing.assert_close(ours[0].running_mean, momentum * x.mean(0))


def test_head_batchnorm_momentum_knob_rejects_values_outside_0_1():
    from src.run.errors import ConfigError

    with pytest.raises(ConfigError, match="bn_momentum"):
        HAFrame(bn_momentum=0.0)
