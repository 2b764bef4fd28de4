import pytest
import torch

from src.models.auxiliary import AuxiliaryBlock
from src.models.resnet import PreActResNet


def test_auxiliary_forward_matches_equations_2_and_3():
    torch.manual_seed(0)
    block = AuxiliaryBlock(5, 3)
    y = torch.randn(4, 5)
    x_star = torch.eye(3)[torch.tensor([0, 2, 1, 0])]
    out, a = block(y, x_star)
    w = block.linear.weight.T  # w_ij: (l, s)
    expected_a = torch.stack([sum(abs(sum(w[i, j] * y[b, i] for i in range(5)) - x_star[b, j]) for j in range(3))
                              for b in range(4)])
    assert a.shape == (4, 1)
    torch.testing.assert_close(a.squeeze(1), expected_a)
    torch.testing.assert_close(out, y * expected_a[:, None])


def test_auxiliary_gradients_match_equations_4_to_7():
    torch.manual_seed(1)
    l, s, b = 6, 3, 5
    block = AuxiliaryBlock(l, s).double()
    y = torch.randn(b, l, dtype=torch.double, requires_grad=True)
    x_star = torch.eye(s, dtype=torch.double)[torch.randint(0, s, (b,))]
    out, a = block(y, x_star)
    upstream = torch.randn(b, l, dtype=torch.double)  # ∂L/∂y^{N-1}
    (out * upstream).sum().backward()

    w = block.linear.weight.detach().T  # (l, s)
    yd = y.detach()
    z = yd @ w  # Σ_i w_ij y_i
    chi = torch.where(z > x_star, 1.0, -1.0).double()  # (7)
    dL_da = (upstream * yd).sum(1, keepdim=True)  # (4)
    dL_dy = upstream * a.detach() + (chi * dL_da) @ w.T  # (5): Σ_j χ_j ∂L/∂a w_ij
    dL_dw = yd.T @ (chi * dL_da)  # (6), summed over the batch
    torch.testing.assert_close(y.grad, dL_dy)
    torch.testing.assert_close(block.linear.weight.grad.T, dL_dw)


@pytest.mark.parametrize("depth", [10, 16, 28])
def test_depth_is_6n_plus_4(depth):
    net = PreActResNet(depth, num_classes=10, in_channels=3)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 1 + 6 * ((depth - 4) // 6)


@pytest.mark.parametrize("depth", [0, 9, 12, 27])
def test_bad_depth_is_a_clear_error(depth):
    with pytest.raises(ValueError, match="6n\\+4"):
        PreActResNet(depth, num_classes=10)


def test_widths_and_baseline_has_no_block():
    net = PreActResNet(10, num_classes=7, in_channels=1, widen_factor=2)
    assert net.auxiliary is None and net.num_features == 128 and net.fc.out_features == 7
    output = net(torch.randn(2, 1, 28, 28))
    assert output.logits.shape == (2, 7) and output.auxiliary_score is None


@pytest.mark.parametrize("superclasses", [None, 3])
def test_every_parameter_gets_a_finite_gradient(superclasses):
    torch.manual_seed(0)
    net = PreActResNet(10, num_classes=10, in_channels=3, num_superclasses=superclasses)
    x = torch.randn(4, 3, 32, 32)
    x_star = torch.eye(3)[torch.tensor([0, 1, 2, 0])] if superclasses else None
    logits = net(x, x_star).logits
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    names = [n for n, p in net.named_parameters()]
    assert any(n.startswith("auxiliary.") for n in names) == bool(superclasses)
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_auxiliary_net_needs_a_superclass():
    net = PreActResNet(10, num_classes=10, num_superclasses=2)
    with pytest.raises(ValueError, match="x_star"):
        net(torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("position", [1, 2, 3])
def test_the_block_at_any_stage_trains_and_reads_the_superclass(position):
    """method.position: z from the pooled stage output, the whole map scaled by a before the next stage."""
    torch.manual_seed(0)
    net = PreActResNet(10, num_classes=10, in_channels=1, num_superclasses=2, position=position)
    assert net.auxiliary.in_features == net.stage_channels(position)
    x, label = torch.randn(8, 1, 28, 28), torch.arange(8) % 10
    x_star = torch.eye(2)[torch.arange(8) % 2]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    before = net(x, x_star).logits.detach()
    loss = torch.nn.functional.cross_entropy(net(x, x_star).logits, label)
    loss.backward()
    assert net.auxiliary.linear.weight.grad.abs().sum() > 0
    optimizer.step()
    net.eval()
    after = net(x, x_star).logits
    assert not torch.equal(before, after.detach())
    # A different x* changes the output (through z_j of the fed superclass, equation 3).
    assert not torch.allclose(after, net(x, 1 - x_star).logits)
    # Equation 2 at stage k: the same as scaling the stage output by hand.
    h, extras = net.forward_features(x)
    a = (net.auxiliary.linear(h.mean((2, 3)) if h.dim() == 4 else h) - x_star).abs().sum(1)
    torch.testing.assert_close(net.forward_head(h, x_star, extras).auxiliary_score.squeeze(1), a)
