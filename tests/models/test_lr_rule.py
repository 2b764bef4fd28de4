"""lr_rule: the methods_* presets train each method at the shared LR times its loss's scale (docs/methods.md)."""
import csv

import pytest
import pytorch_lightning as pl
import torch

from helpers import FAST, compose_cfg
from src.data.superclasses import cifar100_tree, dataset_cases
from src.models.hxe import HXE
from src.models.soft_labels import SoftLabels
from src.run.errors import ConfigError
from src.train import build, make_datamodule

PRESETS = ["methods_digits", "methods_mnist", "methods_svhn", "methods_cifar10", "methods_cifar100"]


def _lrs(tmp_path, *overrides) -> tuple[float, float]:
    cfg = compose_cfg([*FAST, *overrides])
    _, module, _ = build(cfg, tmp_path / "run")
    return module.optimizer.keywords["lr"], module.hparams.lr_min


def _case1_nodes() -> int:
    """The root, case1's superclasses and the classes, counted from case1's table."""
    datamodule = make_datamodule(compose_cfg(["dataset=digits"]).dataset)
    table = dataset_cases("digits", datamodule.class_names, datamodule.tree)["case1"].table
    return 1 + len(set(table)) + len(table)


@pytest.mark.parametrize("method, scale", [("hxe", "nodes"), ("hal_hxe", "nodes"), ("soft_labels", "K"),
                                           ("hal_soft_labels", "K"), ("hal", 1), ("heads", 1), ("haframe", 1)])
def test_loss_scale_multiplies_the_shared_lr_and_lr_min(tmp_path, method, scale):
    factor = {"nodes": _case1_nodes(), "K": 10}.get(scale, scale)
    assert _lrs(tmp_path, f"method={method}", "case=case1", "optimizer.lr=0.5", "lr_min=0.01",
                "lr_rule=loss_scale") == (0.5 * factor, 0.01 * factor)
    assert _lrs(tmp_path, f"method={method}", "case=case1", "optimizer.lr=0.5", "lr_min=0.01") == (0.5, 0.01)


def test_soft_labels_with_batchmean_are_at_cross_entropys_scale(tmp_path):
    assert _lrs(tmp_path, "method=soft_labels", "case=case1", "method.reduction=batchmean",
                "lr_rule=loss_scale")[0] == 1.0


def test_an_unknown_lr_rule_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="lr_rule must be one of"):
        _lrs(tmp_path, "lr_rule=scaled")


@pytest.mark.parametrize("preset", PRESETS)
def test_the_untuned_comparison_presets_use_the_rule(preset):
    assert compose_cfg([f"experiment={preset}"]).lr_rule == "loss_scale"
    assert compose_cfg([]).lr_rule == "shared"   # tuning and single runs: the LR as given


@pytest.mark.parametrize("rule, factor", [("shared", 1), ("loss_scale", "nodes")])
def test_the_clipping_threshold_is_divided_by_the_factor(tmp_path, rule, factor):
    """LR·N with the threshold c/N gives the clipped step of N·loss at the shared LR: LR·N·clip(g, c/N) = LR·clip(N·g, c)."""
    factor = _case1_nodes() if factor == "nodes" else factor
    _, module, _ = build(compose_cfg([*FAST, "method=hxe", "case=case1", f"lr_rule={rule}"]), tmp_path / "run")
    module.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, gradient_clip_val=1.0)
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.ones_like(p)   # norm √(number of weights), far above 1
    module.configure_gradient_clipping(torch.optim.SGD(params, lr=1.0), gradient_clip_val=1.0,
                                       gradient_clip_algorithm="norm")
    norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params]))
    assert norm.item() == pytest.approx(1 / factor, rel=1e-4)


def test_a_run_under_the_rule_trains_at_the_scaled_lr_with_the_trainers_clipping(run_train, tmp_path):
    record = run_train("method=hal_hxe", "case=case1", "lr_rule=loss_scale", "dataset.batch_size=256")
    first = next(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert record["status"] == "finished" and float(first["lr-SGD"]) == _case1_nodes()


def test_on_cifar100s_five_level_tree_hxe_counts_every_node_and_soft_labels_k():
    tree = cifar100_tree([f"c{i}" for i in range(100)])
    hxe, soft = HXE(), SoftLabels()
    hxe.tree = soft.tree = tree
    # root, then levels 1, 2, 3 (2, 4, 8 groups), the 20 coarse superclasses and the 100 classes
    assert (hxe.loss_scale(), soft.loss_scale()) == (1 + 2 + 4 + 8 + 20 + 100, 100)
