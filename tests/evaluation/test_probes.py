import csv
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import Precision

from helpers import FAST, compose_cfg
from src.data.pipeline import normalize
from src.data.superclasses import superclass_table
from src.evaluation.probes import HELD_OUT, StageProbes, fit_ridge, predict_ridge, probe_accuracy, probe_subsets
from src.train import build, make_datamodule, train

COLUMNS = [f"probe/stage{k}_{t}_acc" for k in (1, 2, 3) for t in ("superclass", "class")]


# --- the ridge probe ------------------------------------------------------------------------------------

def test_ridge_separates_linearly_separable_features():
    g = torch.Generator().manual_seed(0)
    centres = 5 * torch.randn(4, 6, generator=g)
    y_fit, y_score = torch.randint(4, (200,), generator=g), torch.randint(4, (100,), generator=g)
    x_fit = centres[y_fit] + 0.1 * torch.randn(200, 6, generator=g)
    x_score = centres[y_score] + 0.1 * torch.randn(100, 6, generator=g)
    assert probe_accuracy(x_fit, y_fit, x_score, y_score, 4, lam=1e-2) == 100.0


def test_ridge_on_random_labels_is_near_chance():
    g = torch.Generator().manual_seed(1)
    x_fit, x_score = torch.randn(2000, 16, generator=g), torch.randn(2000, 16, generator=g)
    y_fit, y_score = torch.randint(10, (2000,), generator=g), torch.randint(10, (2000,), generator=g)
    assert 7 <= probe_accuracy(x_fit, y_fit, x_score, y_score, 10, lam=1e-2) <= 13


def test_ridge_closed_form_equals_lstsq_and_numpy():
    g = torch.Generator().manual_seed(2)
    x, y, lam = torch.randn(30, 5, generator=g) * 3 + 1, torch.randint(3, (30,), generator=g), 0.5
    mean, std, w = fit_ridge(x, y, 3, lam)
    z = ((x.double() - x.double().mean(0)) / x.double().std(0, unbiased=False))
    design = torch.cat([z, torch.ones(30, 1, dtype=torch.float64)], 1)
    target = torch.nn.functional.one_hot(y, 3).double()
    # Ridge as least squares on the augmented system [X̃; √λ I₀] W = [Y; 0] (bias not penalised).
    penalty = np.sqrt(lam) * torch.eye(6, dtype=torch.float64)[:5]
    expected = torch.linalg.lstsq(torch.cat([design, penalty]), torch.cat([target, torch.zeros(5, 3).double()])).solution
    torch.testing.assert_close(w, expected)
    d = design.numpy()
    numpy_w = np.linalg.solve(d.T @ d + lam * np.diag([1.0] * 5 + [0.0]), d.T @ target.numpy())
    np.testing.assert_allclose(w.numpy(), numpy_w, rtol=1e-10, atol=1e-12)
    # λ = 0 on an overdetermined full-rank problem: plain least squares.
    torch.testing.assert_close(fit_ridge(x, y, 3, 0.0)[2], torch.linalg.lstsq(design, target).solution)
    assert torch.equal(predict_ridge((mean, std, w), x), (design @ w).argmax(1))


def test_constant_feature_keeps_the_probe_solvable():
    x = torch.cat([torch.randn(50, 3), torch.zeros(50, 1)], 1)  # a dead channel
    y = (x[:, 0] > 0).long()
    w = fit_ridge(x, y, 2, 1e-2)[2]
    assert torch.isfinite(w).all() and probe_accuracy(x, y, x, y, 2, 1e-2) > 90


def test_subsets_are_fixed_disjoint_and_leave_the_global_generator_alone():
    state = torch.get_rng_state()
    fit, split, score = probe_subsets(1437, 0, 2000, 1000, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert split == "train" and (len(fit), len(score)) == (719, 718)
    assert not set(fit.tolist()) & set(score.tolist()) and max(fit.max(), score.max()) < 1437
    again = probe_subsets(1437, 0, 2000, 1000, seed=0)
    assert torch.equal(again[0], fit) and torch.equal(again[2], score)
    assert not torch.equal(probe_subsets(1437, 0, 2000, 1000, seed=1)[0], fit)
    fit, split, score = probe_subsets(5000, 300, 2000, 1000, seed=0)
    assert split == "val" and (len(fit), len(score)) == (2000, 300) and score.max() < 300


# --- the callback in real runs --------------------------------------------------------------------------

def _run(tmp_path, name, overrides, callbacks):
    run_dir = tmp_path / name
    run_dir.mkdir()
    record = train(compose_cfg([*FAST, *overrides]), run_dir, callbacks=callbacks)
    with open(run_dir / "history.csv") as f:
        return record, list(csv.DictReader(f))


class _Logged(pl.Callback):
    """What the probes logged in each epoch, read right after their hook."""

    def __init__(self):
        self.epochs = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs.append({c: float(trainer.callback_metrics[c]) for c in COLUMNS})


def test_two_epoch_run_logs_six_probe_columns_per_epoch(tmp_path):
    probes, logged = StageProbes(), _Logged()
    # Checkpointing on: history rows are then taken when the epoch's checkpoint is saved.
    record, rows = _run(tmp_path, "run", ["trainer.max_epochs=2", "trainer.enable_checkpointing=true"],
                          [probes, logged])
    assert record["status"] == "finished" and probes.split == "validation"
    assert [float(r["epoch"]) for r in rows] == [1, 2]  # counted from 1, like the console
    # Each epoch's values land in that epoch's history row.
    for row, values in zip(rows, logged.epochs):
        assert {c: float(row[c]) for c in COLUMNS} == pytest.approx(values)
    assert logged.epochs[0] != logged.epochs[1]
    for row in rows:
        values = {c: float(row[c]) for c in COLUMNS}
        assert all(0 <= v <= 100 for v in values.values()), values
    # 10 classes: chance is 10 %; after two epochs the last stage separates the digits linearly.
    assert float(rows[-1]["probe/stage3_class_acc"]) > 50
    # case1 has 2 superclasses: chance is the larger one's share of the scored images (about 50 %).
    t = torch.as_tensor(record["superclasses"])
    datamodule = make_datamodule(compose_cfg(FAST).dataset)
    datamodule.setup()  # the val split does not depend on the seed
    scored_labels = datamodule.splits[probes._score_split][2][probes._score_index]
    chance = 100 * torch.bincount(t[scored_labels]).max().item() / len(scored_labels)
    assert float(rows[-1]["probe/stage3_superclass_acc"]) > chance + 25


class _Forbidden:
    """Stands in for the test split during fit: any read fails the run."""

    def _refuse(self, *args):
        raise AssertionError("the test split was read during fit")

    __getitem__ = __len__ = __iter__ = _refuse


class _NoTestDuringFit(pl.Callback):
    def on_fit_start(self, trainer, pl_module):
        self.test = trainer.datamodule.splits["test"]
        trainer.datamodule.splits["test"] = _Forbidden()

    def on_fit_end(self, trainer, pl_module):
        trainer.datamodule.splits["test"] = self.test


def test_guard_catches_a_callback_that_reads_the_test_split(tmp_path):
    # PerEpochTestLoss reads the test split every epoch: the guard must fail that run.
    with pytest.raises(AssertionError, match="test split was read"):
        _run(tmp_path, "run", ["test_curve=true"], [_NoTestDuringFit()])


def test_held_out_training_images_without_validation_and_never_the_test_split(tmp_path, caplog):
    # The baseline has no superclasses: the probes take the evaluation hierarchy (Table 1 case1).
    probes = StageProbes(hierarchy=superclass_table("digits", "case1"))
    with caplog.at_level("INFO", logger="src.evaluation.probes"):
        record, rows = _run(tmp_path, "run", ["dataset.val_size=0", "case=baseline"], [probes, _NoTestDuringFit()])
    assert record["status"] == "finished" and record["val_error"] is None
    assert probes.split == HELD_OUT
    assert sum("held-out training images" in r.getMessage() for r in caplog.records) == 1
    fit, score = set(probes._fit_index.tolist()), set(probes._score_index.tolist())
    assert len(fit) == 719 and len(score) == 718 and not fit & score
    assert len(rows) == 1 and all(0 <= float(rows[0][c]) <= 100 for c in COLUMNS)


def test_without_any_hierarchy_only_class_probes_run(tmp_path):
    _, rows = _run(tmp_path, "run", ["case=baseline"], [StageProbes()])
    assert all(0 <= float(rows[0][f"probe/stage{k}_class_acc"]) <= 100 for k in (1, 2, 3))
    assert not any("superclass" in c for c in rows[0])


class _FinalWeights(pl.Callback):
    def on_train_end(self, trainer, pl_module):
        self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


@pytest.mark.parametrize("position", [3, 1])
def test_probes_change_nothing(tmp_path, position):
    overrides = [f"method.position={position}"]
    plain, with_probes = _FinalWeights(), _FinalWeights()
    a, _ = _run(tmp_path, "plain", overrides, [plain])
    b, rows = _run(tmp_path, "probes", overrides, [StageProbes(), with_probes])
    assert "probe/stage1_class_acc" in rows[0]
    assert plain.state.keys() == with_probes.state.keys()
    for key in plain.state:  # BatchNorm running statistics included
        assert torch.equal(plain.state[key], with_probes.state[key]), key
    assert (a["test_error"], a["test_loss"], a["val_error"]) == (b["test_error"], b["test_loss"], b["val_error"])


def test_stage_features_are_what_the_network_computes_with_the_block_after_stage_1(tmp_path):
    cfg = compose_cfg([*FAST, "method.position=1"])
    pl.seed_everything(0)
    datamodule, module, _ = build(cfg, tmp_path)
    trainer = SimpleNamespace(datamodule=datamodule, precision_plugin=Precision())
    index = torch.arange(20)
    module.train()
    features, labels = StageProbes().stage_features(trainer, module, "train", index)
    images, superclass, label = datamodule.splits["train"]
    assert torch.equal(labels, label[:20])
    assert module.training  # the helper's eval mode is undone
    net = module.net.eval()
    with torch.no_grad():
        x = normalize(images[:20], datamodule.mean, datamodule.std)
        h1 = net.stages[0](net.conv(x))
        a = net.auxiliary.score(net.auxiliary.project(h1), module.one_hot(superclass[:20]))
        h2 = net.stages[1](net.auxiliary.scale(h1, a))
        h3 = net.stages[2](h2)
    for k, h in ((1, h1), (2, h2), (3, h3)):
        torch.testing.assert_close(features[k], h.mean((2, 3)), rtol=1e-4, atol=1e-5)
    # Without the block's rescaling stage 2 would differ: the hooks see the fed superclass's effect.
    assert not torch.allclose(features[2], net.stages[1](h1).mean((2, 3)).detach(), rtol=1e-3, atol=1e-4)
