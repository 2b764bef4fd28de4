import math

import numpy as np
import pytest
import torch

from src.run.errors import ConfigError
from src.models.resnet import PreActResNet
from src.models.method import NetOutput
from src.models.proxydr import ProxyDR, ProxyHead, initial_scale


def _head(distance, dynamic=False, classes=3):
    torch.manual_seed(0)
    head = ProxyHead(4, classes, distance, dynamic, embedding_dim=None)
    with torch.no_grad():
        head.proxies.copy_(torch.tensor([[2.0, 0, 0, 0], [0, 1.0, 1.0, 0], [-1.0, 0, 0, 3.0]])[:classes])
    return head


@pytest.mark.parametrize("distance", ["euc", "arccos"])
def test_logits_match_a_direct_computation(distance):
    head = _head(distance)
    h = torch.tensor([[1.0, 1.0, 0, 0], [0, 0, -2.0, 1.0]])
    f = h.numpy() / np.linalg.norm(h.numpy(), axis=1, keepdims=True)
    w = head.proxies.detach().numpy()
    cos = f @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T
    if distance == "euc":   # −s·log‖f̂ − ŵ‖
        expected = -10.0 * np.log(np.linalg.norm(f[:, None] - (w / np.linalg.norm(w, axis=1, keepdims=True))[None],
                                                 axis=2))
    else:
        expected = -10.0 * np.log(np.arccos(0.999999 * cos) + 1e-12)
    torch.testing.assert_close(head(h), torch.tensor(expected, dtype=torch.float32), rtol=1e-5, atol=1e-4)


def test_embedding_comes_first_and_proxies_are_the_class_vectors():
    net = PreActResNet(10, 10, in_channels=1)
    method = ProxyDR()
    method.attach(net, 10, 2)
    head = net.fc
    assert isinstance(head, ProxyHead) and net.class_vectors() is head.proxies
    assert head.proxies.shape == (10, 128) and head.embedding.in_features == 64
    torch.testing.assert_close(head.proxies.norm(dim=1), torch.ones(10))   # normalised Gaussian init
    h = torch.randn(2, 64)
    f = head.embedding(h)
    cos = torch.nn.functional.normalize(f) @ torch.nn.functional.normalize(head.proxies).T
    torch.testing.assert_close(head(h), -10.0 * torch.log(2 - 2 * cos + 1e-12) / 2)


def test_scale_is_fixed_at_10_or_starts_at_the_codes_root():
    assert _head("euc").scale.item() == pytest.approx(10.0)
    for distance, root in (("euc", 4.342526), ("arccos", 3.922178)):  # hand-derived: roots of the scale equation
        assert initial_scale(10, distance) == pytest.approx(root, abs=1e-5)
        head = ProxyHead(4, 10, distance, dynamic_scale=True)
        assert head.scale.item() == pytest.approx(root, rel=1e-6)
    s = initial_scale(100, "arccos")   # it is a root of the code's equation
    assert 99 / (math.pi / 2) ** s * (s + 1) * (math.pi / 4) ** s - s + 1 == pytest.approx(0, abs=1e-8)


def _residual(s, s_now, cos, label, distance):
    """r(s)² of the module docstring, in numpy; B_avg uses the current scale s_now (detached in the code)."""
    theta = np.arccos(0.999999 * np.clip(cos, -1, 1))
    rows = np.arange(len(label))
    numer = theta ** -s_now if distance == "arccos" else (2 - 2 * cos) ** (-s_now / 2)
    mask = np.ones_like(cos, dtype=bool)
    mask[rows, label] = False
    b_avg = numer[mask].sum() / len(label)
    t_med = min(math.pi / 4, float(np.median(theta[rows, label])))
    g = t_med ** s if distance == "arccos" else (2 - 2 * math.cos(t_med) + 1e-12) ** (s / 2)
    return (b_avg * (s + 1) * g + 1 - s) ** 2


@pytest.mark.parametrize("distance", ["euc", "arccos"])
def test_dynamic_scale_takes_one_adam_step_per_training_batch(distance):
    head = _head(distance, dynamic=True)
    method = ProxyDR(distance=distance, dynamic_scale=True)
    method.head = head
    h = torch.tensor([[1.0, 0.2, 0, 0], [0.1, 1.0, 0.8, 0], [0, 0.3, 0.1, 1.0]])
    label = torch.tensor([0, 1, 2])
    log_s0 = head.log_scale.item()
    cos = head.cosine(h).detach().double().numpy()
    eps = 1e-6   # d(r²)/d(log s) by central differences
    s0 = math.exp(log_s0)
    grad = (_residual(math.exp(log_s0 + eps), s0, cos, label.numpy(), distance)
            - _residual(math.exp(log_s0 - eps), s0, cos, label.numpy(), distance)) / (2 * eps)

    head.eval()                                    # no update outside training
    method.loss(NetOutput(head(h)), label, None)
    assert head.log_scale.item() == log_s0 and head.scale_step.item() == 0

    head.train()
    method.loss(NetOutput(head(h)), label, None)
    # Adam's first step moves by lr·m̂/(√v̂ + ε) = lr·sign(g)
    assert head.scale_step.item() == 1
    assert head.log_scale.item() == pytest.approx(log_s0 - 1e-4 * math.copysign(1, grad), abs=1e-7)
    assert head.scale_exp_avg.item() == pytest.approx(0.1 * grad, rel=1e-3)

    state = head.state_dict()                      # a checkpoint restores the adapted scale and Adam state
    assert {"log_scale", "scale_step", "scale_exp_avg", "scale_exp_avg_sq"} <= set(state)
    fresh = ProxyHead(4, 3, distance, dynamic_scale=True, embedding_dim=None)
    fresh.load_state_dict(state)
    assert fresh.log_scale.item() == head.log_scale.item() and fresh.scale_step.item() == 1


def test_fixed_scale_never_moves_and_bad_distance_is_an_error():
    head = _head("euc")
    method = ProxyDR()
    method.head = head
    method.loss(NetOutput(head(torch.randn(3, 4))), torch.tensor([0, 1, 2]), None)
    assert head.scale.item() == pytest.approx(10.0) and head.scale_step.item() == 0
    with pytest.raises(ConfigError, match="method.distance"):
        ProxyDR(distance="cosine")


def test_euclidean_logits_stay_finite_where_rounding_puts_cos_above_one():
    from src.models.proxydr import proxy_logits, scale_residual

    cos = torch.tensor([[1.0000001, 0.5]])  # hand-derived: float32 rounding of a unit vector with itself
    assert torch.isfinite(proxy_logits(cos, 10.0, "euc")).all()
    assert proxy_logits(cos, 10.0, "euc")[0, 0].item() == pytest.approx(-10.0 * np.log(1e-12) / 2, rel=1e-6)
    assert torch.isfinite(scale_residual(torch.tensor(0.0), torch.tensor([[0.5, 1.0000001]]), torch.tensor([0]),  # hand-derived
                                         "euc"))
