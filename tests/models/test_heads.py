import math

import pytest
import torch
from omegaconf import OmegaConf

from src.run.errors import ConfigError
from src.models.resnet import PreActResNet
from src.models.heads import SuperclassHeads
from src.models.method import NetOutput


def _ce(logits, target):  # −log softmax(z)_target, batch mean, written out
    return sum(math.log(sum(math.exp(v) for v in row)) - row[t] for row, t in zip(logits, target)) / len(target)


def test_loss_on_a_hand_made_batch():
    z = [[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]]          # main head, 3 classes
    u1 = [[1.0, -1.0], [0.0, 2.0]]                    # stage-1 superclass head
    u2 = [[0.3, 0.1], [-2.0, 1.0]]                    # stage-2 superclass head
    y, s = [0, 1], [0, 1]
    out = NetOutput(torch.tensor(z), extras={"superclass1": torch.tensor(u1), "superclass2": torch.tensor(u2)})
    method = SuperclassHeads(weight=0.3)
    method.superclass_taps = ("superclass1", "superclass2")
    expected = _ce(z, y) + 0.3 * (_ce(u1, s) + _ce(u2, s))
    assert method.loss(out, torch.tensor(y), torch.tensor(s)).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("stages", [(), [0], (4,), (1, 1), (True,), "x"])
def test_bad_stages_are_a_config_error(stages):
    with pytest.raises(ConfigError, match="method.stages") as err:
        SuperclassHeads(stages=stages)
    assert "\n" not in str(err.value)


def test_stages_from_yaml_and_heads_read_the_pooled_stage_map():
    torch.manual_seed(0)
    method = SuperclassHeads(stages=OmegaConf.create([3, 1]))
    net = PreActResNet(10, 10, in_channels=1).eval()
    method.attach(net, 10, 4)
    assert method.superclass_taps == ("superclass1", "superclass3") and method.class_taps == ()
    assert net.taps["superclass3"][-1].in_features == 64
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        out = net(x)
        h1 = net.stages[0](net.conv(x))
        h3 = net.stages[2](net.stages[1](h1))
        for name, h in (("superclass1", h1), ("superclass3", h3)):
            linear = net.taps[name][-1]
            torch.testing.assert_close(out.extras[name], h.mean((2, 3)) @ linear.weight.T + linear.bias)
