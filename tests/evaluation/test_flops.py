"""FLOPs per training image: FlopCounterMode's count against the layer shapes, derived by hand."""
import pytest
import torch
from torch import nn

from helpers import FAST, compose_cfg
from src.evaluation.flops import train_flops_per_image
from src.train import build


def forward_flops_by_layer(module, image_shape) -> list[int]:
    """2 FLOPs per multiply-add of each convolution and linear layer, for one image, in call order:
    a convolution does C_in/groups · C_out · k_h · k_w multiply-adds per output pixel; a linear layer in · out."""
    flops = []

    def hook(layer, inputs, output):
        if isinstance(layer, nn.Conv2d):
            per_pixel = layer.in_channels // layer.groups * layer.out_channels * layer.kernel_size[0] * layer.kernel_size[1]
            flops.append(2 * per_pixel * output.shape[-2] * output.shape[-1])
        else:
            flops.append(2 * layer.in_features * layer.out_features)

    hooks = [m.register_forward_hook(hook) for m in module.net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    module.eval()
    with torch.no_grad():
        module(torch.zeros(1, *image_shape), torch.zeros(1, dtype=torch.long))
    for h in hooks:
        h.remove()
    return flops


@pytest.mark.parametrize("case", ["baseline", "case1"])
def test_a_training_step_costs_three_forward_passes_but_the_input_gradient(tmp_path, case):
    datamodule, module, _ = build(compose_cfg([*FAST, f"case={case}"]), tmp_path)
    layers = forward_flops_by_layer(module, datamodule.image_shape)
    # Backward: the gradient of each layer's input and of its weights, one forward's cost each; the first
    # convolution's input is the image, which needs no gradient.
    expected = 3 * sum(layers) - layers[0]
    assert train_flops_per_image(module, datamodule) == expected
    # Depth 10 = 6n+4, n = 1: the stem, 2 convolutions in each of 3 stages, the 1x1 shortcuts of the two stages
    # that widen (16 -> 32 -> 64) and the classifier: 10 layers; HAL's block (a linear 64 -> 2) adds one.
    assert len(layers) == (11 if case == "case1" else 10)


def test_counting_changes_no_weight_statistic_gradient_or_random_state(tmp_path):
    datamodule, module, _ = build(compose_cfg([*FAST, "case=case1"]), tmp_path)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    rng = torch.get_rng_state()
    train_flops_per_image(module, datamodule)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert all(p.grad is None for p in module.parameters())
    assert torch.equal(rng, torch.get_rng_state())


def test_the_run_records_it(run_train):
    record = run_train("trainer.fast_dev_run=true", "case=case1")
    datamodule, module, _ = build(compose_cfg([*FAST, "case=case1"]), "unused")
    assert record["flops_per_train_image"] == train_flops_per_image(module, datamodule)
