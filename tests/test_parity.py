"""The framework's training path against the hand-written loop of bench/parity.py, step by step."""
from pathlib import Path

import pytest
import torch

from bench.common import synthetic_overrides
from bench.parity import StepLosses, compose, raw_loop
from src.train import train

STEPS = 6


def framework_losses(cfg, tmp_path: Path) -> list[float]:
    record = StepLosses()
    train(cfg, tmp_path, callbacks=[record])
    return record.losses


@pytest.fixture
def cfg():
    return compose(synthetic_overrides("cifar", 512, 128) + [
        "depth=10", "trainer.max_epochs=2", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        "trainer.enable_checkpointing=false", f"+trainer.max_steps={STEPS}"])


def test_framework_equals_hand_written_loop(cfg, tmp_path):
    _, raw = raw_loop(cfg, torch.device("cpu"), channels_last=True, max_steps=STEPS)
    ours = framework_losses(cfg, tmp_path)
    assert len(ours) == STEPS and raw[0] != raw[-1]
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(raw), rtol=1e-6, atol=1e-6)


def test_optimised_path_follows_the_plain_path(cfg, tmp_path):
    """channels_last (the default) vs the plain NCHW loop: same trajectory up to float rounding."""
    _, plain = raw_loop(cfg, torch.device("cpu"), channels_last=False, max_steps=STEPS)
    optimised = framework_losses(cfg, tmp_path)
    torch.testing.assert_close(torch.tensor(optimised), torch.tensor(plain), rtol=5e-3, atol=0)
