import math

import pytest
import torch
import torch.nn.functional as F

from src.models.resnet import PreActResNet
from src.models.dks import DKS, HALDKS, kl_divergence, synergy_loss
from src.models.method import NetOutput


def test_synergy_is_zero_when_all_heads_agree():
    z = torch.randn(5, 7)
    assert synergy_loss([z, z.clone(), z.clone()]).item() == 0.0


def test_synergy_on_two_heads_matches_hand_computation():
    # row 0: p1 = softmax([0, ln 3]) = (1/4, 3/4), p2 = (1/2, 1/2); row 1: both heads agree (KL 0)
    z1 = torch.tensor([[0.0, math.log(3.0)], [1.0, 2.0]])
    z2 = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    kl_21 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)    # KL(p2 ‖ p1)
    kl_12 = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)  # KL(p1 ‖ p2)
    expected = (kl_21 + kl_12) / 2                                      # mean over the batch of 2
    assert synergy_loss([z1, z2]).item() == pytest.approx(expected, abs=1e-6)
    # the temperature divides the logits: doubling logits and T changes nothing
    assert synergy_loss([2 * z1, 2 * z2], temperature=2.0).item() == pytest.approx(expected, abs=1e-6)


def test_detached_target_gets_no_gradient():
    target = torch.randn(3, 4, requires_grad=True)
    student = torch.randn(3, 4, requires_grad=True)
    kl_divergence(target, student).backward()
    assert target.grad is None
    # ∂/∂z KL(p ‖ softmax(z)) = (softmax(z) − p) / B (smoothing changes it by ~1e-8)
    expected = (F.softmax(student, 1) - F.softmax(target, 1)).detach() / 3
    torch.testing.assert_close(student.grad, expected, atol=1e-6, rtol=0)


def test_each_head_is_only_pulled_towards_the_others():
    z1 = torch.randn(4, 5, requires_grad=True)
    z2 = torch.randn(4, 5, requires_grad=True)
    synergy_loss([z1, z2]).backward()
    p1, p2 = F.softmax(z1, 1).detach(), F.softmax(z2, 1).detach()
    torch.testing.assert_close(z1.grad, (p1 - p2) / 4, atol=1e-6, rtol=0)
    torch.testing.assert_close(z2.grad, (p2 - p1) / 4, atol=1e-6, rtol=0)


def _dks_net(depth, in_channels=1, num_classes=10):
    torch.manual_seed(0)
    net = PreActResNet(depth, num_classes, in_channels=in_channels)
    DKS().attach(net, num_classes, 2)
    return net


@pytest.mark.parametrize("depth,blocks", [(10, (1, 1, 1)), (28, (4, 2, 4))])
@pytest.mark.parametrize("size", [28, 32])
def test_branch_shapes_and_widths(depth, blocks, size):
    net = _dks_net(depth).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, size, size))
    assert out.extras["branch1"].shape == out.extras["branch2"].shape == out.logits.shape == (2, 10)
    b1, b2 = net.taps["branch1"], net.taps["branch2"]
    # branch1: n blocks to 32, max(1, n//2) to 64; branch2: n blocks to 128 (the code's widths[2]*2)
    convs1 = [m.conv2.out_channels for m in b1 if hasattr(m, "conv2")]
    convs2 = [m.conv2.out_channels for m in b2 if hasattr(m, "conv2")]
    assert convs1 == [32] * blocks[0] + [64] * blocks[1] and convs2 == [128] * blocks[2]
    assert b1[-1].in_features == 64 and b2[-1].in_features == 128


@pytest.mark.parametrize("depth", [10, 28])
def test_inference_parameters_equal_the_baseline(depth):
    net = _dks_net(depth, in_channels=3)
    baseline = PreActResNet(depth, 10, in_channels=3)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(net.taps) > 0
    assert count(net) - count(net.taps) == count(baseline)


def test_dks_loss_is_the_hand_sum_of_its_terms():
    torch.manual_seed(1)
    z = [torch.randn(6, 4) for _ in range(3)]
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    out = NetOutput(z[2], extras={"branch1": z[0], "branch2": z[1]})
    method = DKS(weight=0.5, temperature=2.0)

    def kl(p_logits, q_logits):  # KL(p̃ ‖ q̃) with the official smoothing, written out
        p = (F.softmax(p_logits / 2.0, 1) + 1e-8) / (1 + 4e-8)
        q = (F.softmax(q_logits / 2.0, 1) + 1e-8) / (1 + 4e-8)
        return (p * (p.log() - q.log())).sum(1).mean()

    ce = sum(-F.log_softmax(zi, 1)[torch.arange(6), y].mean() for zi in z)
    kls = sum(kl(z[j], z[i]) for i in range(3) for j in range(3) if i != j)
    torch.testing.assert_close(method.loss(out, y, None), ce + 0.5 * kls)


def test_taps_are_declared():
    net = PreActResNet(10, 10, in_channels=1, num_superclasses=2)
    method = HALDKS()
    method.attach(net, 10, 2)
    assert method.name == "hal_dks" and method.auxiliary and method.needs_superclasses
    assert method.class_taps == ("branch1", "branch2") and method.superclass_taps == ()
    assert net.tap_stage == {"branch1": 1, "branch2": 2}
