"""model=resnet18|resnet50: torchvision's ImageNet ResNets behind PreActResNet's seam (src/models/torchvision_resnet.py).

Small inputs (16 px) keep these fast on a CPU; the stem and stages run on any size (the pool is adaptive)."""
import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision

from helpers import HandScore
from src.run.errors import ConfigError
from src.models.dks import DKS, HALDKS
from src.models.heads import HALHeads, SuperclassHeads
from src.models.method import Method
from src.models.proxydr import ProxyDR
from src.models.torchvision_resnet import TorchvisionResNet, WeightsUnavailable, weights_file

K, S, B = 10, 3, 4


def _batch(seed=0, size=16, channels=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, channels, size, size, generator=g)
    label = torch.tensor([0, 4, 7, 9])
    superclass = label % S
    return x, label, superclass


def test_stages_are_torchvisions_layers_and_the_seam_composes():
    torch.manual_seed(0)
    net = TorchvisionResNet("resnet18", num_classes=K)
    plain = torchvision.models.resnet18(num_classes=K)
    assert [net.stage_channels(k) for k in (1, 2, 3, 4)] == [64, 128, 256, 512] and net.num_features == 512
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in plain.parameters())
    # the same weights in torchvision's own forward give the same logits
    plain.load_state_dict({**{k.replace("stem.0", "conv1").replace("stem.1", "bn1"): v
                              for k, v in net.state_dict().items() if k.startswith("stem")},
                           **{f"layer{int(k.split('.')[1]) + 1}.{k.split('.', 2)[2]}": v
                              for k, v in net.state_dict().items() if k.startswith("stages")},
                           "fc.weight": net.fc.weight, "fc.bias": net.fc.bias})
    net.eval(), plain.eval()
    x, _, _ = _batch()
    h, extras = net.forward_features(x)
    assert h.shape == (B, 512) and extras == {}
    torch.testing.assert_close(net.forward_head(h).logits, plain(x))
    assert TorchvisionResNet("resnet50", num_classes=K).stage_channels(4) == 2048


@pytest.mark.parametrize("position", [4, 2])
def test_the_block_equals_equations_2_to_7_on_resnet18(position):
    """As tests/models/test_models.py, on the block's input y from resnet18: a = Σ_j |Σ_i w_ij y_i − x*_j| (3),
    y^{N-1} = y·a (2), and the gradients of equations (4)-(7) under the network's own loss."""
    torch.manual_seed(1)
    net = TorchvisionResNet("resnet18", num_classes=K, num_superclasses=S, position=position).double().eval()
    x, label, superclass = _batch()
    x_star = F.one_hot(superclass, S).double()
    h, extras = net.forward_features(x.double())
    y = h.detach().requires_grad_(True)
    out = net.forward_head(y, x_star, extras)
    w = net.auxiliary.linear.weight.detach().T  # w_ij (l, s)
    pooled = y.detach().mean((2, 3)) if position < 4 else y.detach()
    z = pooled @ w
    a = (z - x_star).abs().sum(1)
    torch.testing.assert_close(out.auxiliary_score.squeeze(1), a)
    torch.testing.assert_close(out.auxiliary_projection, z)
    scaled = y.detach() * (a.view(-1, 1, 1, 1) if position < 4 else a[:, None])
    rest = scaled if position == 4 else net._pool(net._stages(scaled, range(position + 1, 5), {}))
    torch.testing.assert_close(out.logits, net.fc(rest))  # (2), then the rest of the network

    # backward: with upstream = ∂L/∂y^{N-1} taken from the network itself, (4)-(7) give ∂L/∂y and ∂L/∂w
    scaled_leaf = scaled.clone().requires_grad_(True)
    rest = scaled_leaf if position == 4 else net._pool(net._stages(scaled_leaf, range(position + 1, 5), {}))
    F.cross_entropy(net.fc(rest), label).backward()
    upstream = scaled_leaf.grad
    net.zero_grad()
    F.cross_entropy(out.logits, label).backward()
    chi = torch.where(z > x_star, 1.0, -1.0).double()                                     # (7)
    dims = (1, 2, 3) if position < 4 else (1,)
    dL_da = (upstream * y.detach()).sum(dims)[:, None]                                    # (4)
    spread = (chi * dL_da) @ w.T                                                          # Σ_j χ_j ∂L/∂a w_ij
    if position < 4:  # z reads the map's global average: each of the H·W positions gets 1/(H·W) of it
        spread = spread[:, :, None, None].expand_as(y) / (y.shape[2] * y.shape[3])
    expected_a = a.view(-1, 1, 1, 1) if position < 4 else a[:, None]
    torch.testing.assert_close(y.grad, upstream * expected_a + spread)                    # (5)
    torch.testing.assert_close(net.auxiliary.linear.weight.grad.T, pooled.T @ (chi * dL_da))  # (6)


METHODS = {"hal": lambda: Method(position=4), "dks": lambda: DKS(position=4), "hal_dks": lambda: HALDKS(position=4),
           "heads": lambda: SuperclassHeads(position=4, stages=(1, 2, 3)),
           "hal_heads": lambda: HALHeads(position=4), "proxydr": lambda: ProxyDR(distance="arccos", dynamic_scale=True),
           "hal_p2": lambda: Method(position=2)}


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_trains_on_resnet18_with_finite_gradients_for_every_parameter(name):
    torch.manual_seed(0)
    method = METHODS[name]()
    net = TorchvisionResNet("resnet18", num_classes=K, num_superclasses=S if method.auxiliary else None,
                            position=method.position)
    method.attach(net, K, S)
    x, label, superclass = _batch()
    output = net(x, F.one_hot(superclass, S).float() if method.auxiliary else None)
    assert output.logits.shape == (B, K)
    for tap in method.class_taps:
        assert output.extras[tap].shape == (B, K)
    for tap in method.superclass_taps:
        assert output.extras[tap].shape == (B, S)
    loss = method.loss(output, label, superclass)
    assert torch.isfinite(loss)
    loss.backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert (net.auxiliary is not None) == method.auxiliary
    if method.auxiliary:
        assert net.auxiliary.linear.weight.grad.abs().sum() > 0


def test_dks_branches_read_layer2_and_layer3_and_inference_equals_the_baseline():
    net = TorchvisionResNet("resnet18", num_classes=K)
    baseline = sum(p.numel() for p in net.parameters())
    DKS().attach(net, K, 0)
    assert net.tap_stage == {"branch1": 2, "branch2": 3}
    # branch1: a layer3 copy (2 blocks) + a layer4 copy with max(1, 2 // 2) = 1 block; branch2: layer4 twice as wide
    b1, b2 = net.taps["branch1"], net.taps["branch2"]
    assert (len(b1[0]), len(b1[1]), b1[-1].in_features) == (2, 1, 512)
    assert (len(b2[0]), b2[-1].in_features) == (2, 1024)
    assert sum(p.numel() for n, p in net.named_parameters() if not n.startswith("taps.")) == baseline
    wide = TorchvisionResNet("resnet50", num_classes=K).dks_branches(K)
    assert (len(wide[2][0]), len(wide[2][1]), wide[3][-1].in_features) == (6, 1, 4096)


def test_one_channel_images_and_bad_arguments():
    net = TorchvisionResNet("resnet18", num_classes=K, in_channels=1, num_superclasses=S)
    x, _, superclass = _batch(channels=1, size=8)  # digits' 8 px: 2×2 after the stem, 1×1 from layer2 on
    assert net(x, F.one_hot(superclass, S).float()).logits.shape == (B, K)
    with pytest.raises(ConfigError, match="method.position must be 1, 2, 3 or 4"):
        TorchvisionResNet("resnet18", num_classes=K, num_superclasses=S, position=5)
    with pytest.raises(ConfigError, match="model.arch"):
        TorchvisionResNet("resnet34x", num_classes=K)
    with pytest.raises(ConfigError, match="model.weights=IMAGENET9 is not a weight of resnet18"):
        TorchvisionResNet("resnet18", num_classes=K, weights="IMAGENET9")


def test_offline_missing_weights_name_the_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    calls = []

    def offline(url, dst, *args, **kwargs):
        calls.append((url, dst))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailable) as info:
        TorchvisionResNet("resnet18", num_classes=K, weights="IMAGENET1K_V1")
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    message = str(info.value)
    assert "\n" not in message and str(expected) in message and "IMAGENET1K_V1" in message
    assert calls and calls[0][1] == str(expected)
    assert weights_file(torchvision.models.ResNet18_Weights.IMAGENET1K_V1) == expected


def test_weights_load_through_torchvisions_cache(tmp_path, monkeypatch):
    """The file torch.hub downloads (here written by a stand-in downloader) is what the network holds, the new
    classifier and a one-channel stem (RGB filters summed) aside."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(3)
    published = torchvision.models.resnet18().state_dict()

    def download(url, dst, *args, **kwargs):
        torch.save(published, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    net = TorchvisionResNet("resnet18", num_classes=K, weights="IMAGENET1K_V1")
    torch.testing.assert_close(net.stages[3][1].conv2.weight, published["layer4.1.conv2.weight"])
    torch.testing.assert_close(net.stem[1].running_var, published["bn1.running_var"])
    assert net.fc.out_features == K
    gray = TorchvisionResNet("resnet18", num_classes=K, in_channels=1, weights="IMAGENET1K_V1")  # from the cache now
    torch.testing.assert_close(gray.stem[0].weight, published["conv1.weight"].sum(1, keepdim=True))


def test_fast_dev_run_on_digits_with_resnet18(run_train):
    """digits' 8 px images go in as they are (no upsampling): a run end to end, not a meaningful accuracy."""
    scored = HandScore(rows=512)   # fast_dev_run: one test batch of 512
    record = run_train("model=resnet18", "debug=fast", "case=case1", callbacks=[scored])
    assert record["status"] == "debug" and record["position"] == 4 and record["depth"] is None
    assert record["test_error"] == pytest.approx(scored.scores["test_error"], abs=1e-4)
    assert record["hierarchy_name"] == "case1"
    assert record["mistake_severity"] is None or record["mistake_severity"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dks", "hal_dks", "heads", "proxydr"])
def test_every_method_trains_end_to_end_on_resnet18(run_train, method):
    scored = HandScore(rows=512)   # fast_dev_run: one test batch of 512
    record = run_train("model=resnet18", "debug=fast", f"method={method}", "case=case1", "probe=true",
                       callbacks=[scored])
    assert record["status"] == "debug" and record["method"] == method
    assert record["test_error"] == pytest.approx(scored.scores["test_error"], abs=1e-4)
    if method.endswith("dks"):
        assert len(record["test_error_heads"]) == 3  # branch1, branch2, the main head


@pytest.mark.parametrize("model, last", [("preact", 3), ("resnet18", 4), ("resnet50", 4)])
@pytest.mark.parametrize("method", ["hal", "dks", "hal_dks", "heads", "hal_heads", "proxydr"])
def test_every_method_composes_on_every_model_with_the_block_after_the_last_stage(cfg_factory, model, last, method):
    from hydra.utils import get_class, instantiate

    from src.run.config import check_config

    cfg = cfg_factory(f"model={model}", f"method={method}")
    check_config(cfg)
    assert instantiate(cfg.method).position == last
    assert max(getattr(get_class(cfg.model._target_), "stage_numbers", (1, 2, 3))) == last
    if model != "preact":
        assert cfg.model.arch == model and cfg.model.weights is None and "depth" not in cfg.model


def test_the_torchvision_schema_refuses_unknown_keys(cfg_factory):
    from src.run.config import check_config

    with pytest.raises(ConfigError, match=r"^model.depth is not a key of model .*arch, weights"):
        check_config(cfg_factory("model=resnet18", "+model.depth=18"))
