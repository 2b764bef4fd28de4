"""The GPU/speed options, checked on the CPU (the GPU itself is measured by bench/, not by tests)."""
import pytest
import torch
from omegaconf import OmegaConf

from helpers import HandScore, compose_cfg
from src.models.resnet import PreActResNet
from src.data.tree import ClassTree
from src.models.module import HALModule


@pytest.mark.parametrize("accelerator, cuda, expected", [
    ("cpu", True, "32-true"), ("gpu", False, "bf16-mixed"), ("cuda", False, "bf16-mixed"),
    ("auto", True, "bf16-mixed"), ("auto", False, "32-true"),
])
def test_precision_defaults_to_bf16_on_cuda_only(monkeypatch, accelerator, cuda, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    cfg = compose_cfg([f"trainer.accelerator={accelerator}"])
    assert cfg.trainer.precision == expected
    assert compose_cfg([f"trainer.accelerator={accelerator}", "trainer.precision=16-mixed"]).trainer.precision == \
        "16-mixed"


def test_speed_defaults():
    cfg = compose_cfg()
    assert cfg.channels_last is True and cfg.compile is False and cfg.trainer.benchmark is True
    assert "num_workers" not in OmegaConf.to_container(cfg.dataset)  # tensors in memory: no DataLoader workers


def test_channels_last_module():
    net = PreActResNet(10, num_classes=10, in_channels=3, num_superclasses=2)
    tree = ClassTree.from_table("case1", [1] * 5 + [0] * 5, [str(c) for c in range(10)])
    module = HALModule(net, lambda params: torch.optim.SGD(params, lr=0.1), num_classes=10, tree=tree,
                       level=tree.level_names[0], channels_last=True)
    assert module.hparams.num_superclasses == 2
    assert module.net.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not module.net.conv.weight.is_contiguous()


@pytest.mark.slow
def test_compiled_run_trains(run_train):
    scored = HandScore()
    record = run_train("compile=true", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1",
                       callbacks=[scored])
    assert record["status"] == "finished"
    assert record["test_error"] == pytest.approx(scored.scores["test_error"], abs=1e-4)  # compiled == eager


def test_bf16_mixed_path_runs_end_to_end(run_train):
    """The GPU default precision, exercised with CPU autocast: every dtype hand-off (auxiliary-score
    statistics, test protocols, end-of-run passes) must cope with bf16 activations."""
    scored = HandScore()
    record = run_train("trainer.precision=bf16-mixed", "case=case4", "trainer.max_epochs=2", callbacks=[scored])
    assert record["status"] == "finished"
    # bf16 autocast against the same weights in float32: a few of the 360 test images may flip, no more.
    image = 100 / 360
    for key in ("test_error", "test_error_inferred"):
        assert abs(record[key] - scored.scores[key]) <= 3 * image, key
    assert record["test_error_oracle"] == pytest.approx(record["test_error"], abs=1e-3)
