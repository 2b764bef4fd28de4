"""The divergence rule as a pure function."""
import math

import pytest

from src.run.errors import DivergenceError, UserError, check_divergence


@pytest.mark.parametrize("loss", [0.0, 2.3, 3 * math.log(10)])
def test_a_loss_at_or_below_the_limit_passes(loss):
    check_divergence(loss, num_classes=10, factor=3.0, epoch=0, lr=0.1)


@pytest.mark.parametrize("loss, words", [(float("nan"), "non-finite"), (float("inf"), "non-finite"),
                                         (-float("inf"), "non-finite"), (7.0, "7 > 3 × ln(10) = 6.908")])
def test_a_diverged_loss_raises_one_line(loss, words):
    with pytest.raises(DivergenceError) as info:
        check_divergence(loss, num_classes=10, factor=3.0, epoch=4, lr=1.0)
    message = str(info.value)
    assert words in message and "epoch 4" in message and "optimizer.lr (now 1)" in message
    assert "\n" not in message and isinstance(info.value, UserError)


def test_one_class_only_checks_finiteness():
    check_divergence(1e6, num_classes=1, factor=3.0, epoch=0, lr=0.1)
    with pytest.raises(DivergenceError):
        check_divergence(float("nan"), num_classes=1, factor=3.0, epoch=0, lr=0.1)
