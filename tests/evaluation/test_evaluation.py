"""Test protocols and hierarchy metrics, on cases whose answer is known by construction."""
import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.distance import pdist

from helpers import HandScore, hand_heights
from sklearn.metrics import confusion_matrix
from torch import nn

from src.evaluation.protocols import (
    EvaluationConfigError, confusion_figure, error, evaluation_options, hierarchy_metrics, hierarchy_spearman,
    inferred_scores, protocol_scores, superclass_order, tree_distances, wrong_superclass)
from src.data.superclasses import cifar100_tree
from src.models.method import NetOutput
from src.models.resnet import PreActResNet

# A hand-made prediction set: 4 classes, superclasses {0, 1} and {2, 3}.
TABLE = [0, 0, 1, 1]
LABELS = [0, 0, 1, 1, 2, 2, 3, 3, 0, 2]
PREDS = [0, 1, 1, 2, 2, 3, 0, 3, 0, 3]
# Wrong: #1 (0->1, same superclass), #3 (1->2, other), #5 (2->3, same), #6 (3->0, other), #9 (2->3, same).


def hand_confusion():
    return confusion_matrix(LABELS, PREDS, labels=range(4))


def test_metrics_of_a_hand_made_prediction_set():
    c = hand_confusion()
    assert error(c) == pytest.approx(50.0)  # 5 of 10 wrong
    m = hierarchy_metrics(c, TABLE)
    assert m["superclass_acc"] == pytest.approx(80.0)  # only #3 and #6 leave their superclass
    assert m["within_superclass_mistakes"] == pytest.approx(60.0)  # #1, #5, #9 of 5 mistakes
    # s0 = classes {0, 1}: samples #0-#3, #8, wrong #1, #3 -> 2/5; s1: #4-#7, #9, wrong #5, #6, #9 -> 3/5.
    assert m["per_superclass_error"] == pytest.approx([40.0, 60.0])


def test_metrics_that_are_undefined_are_none():
    perfect = np.diag([3, 2, 4, 1])
    m = hierarchy_metrics(perfect, TABLE)
    assert (m["superclass_acc"], m["within_superclass_mistakes"], m["per_superclass_error"]) == (100.0, None, [0.0, 0.0])
    no_images_of_s1 = np.zeros((4, 4))
    no_images_of_s1[0, 1] = 2
    assert hierarchy_metrics(no_images_of_s1, TABLE)["per_superclass_error"] == [100.0, None]
    assert hierarchy_metrics(hand_confusion(), None) == dict.fromkeys(
        ["superclass_acc", "within_superclass_mistakes", "per_superclass_error"])


def test_spearman_is_one_for_a_matching_hierarchy_and_hand_computed_otherwise():
    # Classes 0, 1 share a direction, 2, 3 another: cosine distances 0 within and 1 across.
    vectors = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    assert tree_distances(TABLE).tolist() == [2, 4, 4, 4, 4, 2]  # pairs 01 02 03 12 13 23
    assert hierarchy_spearman(vectors, TABLE) == pytest.approx(1.0)
    # Crossed hierarchy: ranked distances [1.5, 4.5, 4.5, 4.5, 4.5, 1.5] vs tree [4.5, 1.5, 4.5, 4.5, 1.5, 4.5];
    # centred: (-2, 1, 1, 1, 1, -2)·(1, -2, 1, 1, -2, 1) = -6 over norms 12 -> -0.5.
    assert hierarchy_spearman(vectors, [0, 1, 0, 1]) == pytest.approx(-0.5)
    assert hierarchy_spearman(vectors, [0, 0, 0, 0]) is None  # one superclass: tree distance constant
    assert hierarchy_spearman(vectors, None) is None


def test_inferred_scores_by_hand_and_the_two_rules_disagree_where_a_scales_logits():
    # table [0, 1, 1]: class 0 is scored under s0, classes 1 and 2 under s1.
    candidates = torch.tensor([[[4.0, 0.0, 0.0],     # x* = e_0: class 0 is likely (p = e^4 / (e^4 + 2))
                                [20.0, 8.0, 6.0]]])  # x* = e_1: large a, all logits big, class 0 again
    table = [0, 1, 1]
    logit = inferred_scores(candidates, table, "logit")
    assert logit.tolist() == [[4.0, 8.0, 6.0]]
    softmax = inferred_scores(candidates, table, "softmax")
    expected = [4 - math.log(math.exp(4) + 2), 8 - math.log(math.exp(20) + math.exp(8) + math.exp(6)),
                6 - math.log(math.exp(20) + math.exp(8) + math.exp(6))]
    torch.testing.assert_close(softmax, torch.tensor([expected]))
    assert logit.argmax().item() == 1 and softmax.argmax().item() == 0
    with pytest.raises(EvaluationConfigError):
        inferred_scores(candidates, table, "distance")


@pytest.mark.parametrize("rule", ["softmax", "logit"])
def test_inferred_equals_oracle_when_the_model_ignores_x_star(rule):
    torch.manual_seed(0)
    net = PreActResNet(10, num_classes=10, num_superclasses=3).eval()
    # W = 0: z = 0, so a = Σ_j |0 − x*_j| = 1 whatever superclass is fed (eq. 3).
    nn.init.zeros_(net.auxiliary.linear.weight)
    y = torch.randn(64, net.num_features)
    superclass = torch.randint(0, 3, (64,))
    table = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    scores = protocol_scores(net, y, {}, superclass, table, rule, torch.Generator().manual_seed(0))
    oracle = scores["oracle"].argmax(1)
    assert torch.equal(scores["inferred"].argmax(1), oracle)
    assert torch.equal(scores["shuffled"].argmax(1), oracle)
    assert torch.equal(oracle, net.fc(y).argmax(1))


def test_baseline_protocols_are_the_same_logits():
    net = PreActResNet(10, num_classes=10).eval()
    y = torch.randn(8, net.num_features)
    scores = protocol_scores(net, y, {}, torch.zeros(8, dtype=torch.long), None, "softmax", torch.Generator())
    assert set(scores) == {"oracle", "inferred", "shuffled"}
    assert all(torch.equal(s, net.fc(y)) for s in scores.values())


@pytest.mark.parametrize("s", [2, 3, 5])
def test_wrong_superclass_is_never_the_true_one_and_covers_the_others(s):
    superclass = torch.arange(s).repeat(400)
    wrong = wrong_superclass(superclass, s, torch.Generator().manual_seed(1))
    assert not (wrong == superclass).any()
    assert wrong.min() >= 0 and wrong.max() < s
    for j in range(s):
        assert set(wrong[superclass == j].tolist()) == set(range(s)) - {j}
    assert torch.equal(wrong, wrong_superclass(superclass, s, torch.Generator().manual_seed(1)))


class RevealsTheHint(nn.Module):
    """A head whose top class is the first class of the superclass fed as x*: the prediction shows x*."""

    def __init__(self, table):
        super().__init__()
        s = max(table) + 1
        self.auxiliary = SimpleNamespace(num_superclasses=s)
        first = [table.index(j) for j in range(s)]
        self.register_buffer("logits_of", torch.eye(len(table))[first])  # (S, K)

    def forward_head(self, y, x_star, extras=None):
        return NetOutput(x_star @ self.logits_of + 0 * y[:, :1])


def test_shuffled_protocol_never_feeds_the_true_superclass():
    table = [0, 1, 2, 0, 1, 2, 0, 1, 2, 2]
    net = RevealsTheHint(table)
    superclass = torch.randint(0, 3, (500,), generator=torch.Generator().manual_seed(0))
    scores = protocol_scores(net, torch.zeros(500, 4), {}, superclass, table, "softmax", torch.Generator().manual_seed(3))
    fed = lambda protocol: torch.tensor(table)[scores[protocol].argmax(1)]
    assert torch.equal(fed("oracle"), superclass)
    assert not (fed("shuffled") == superclass).any()


def test_single_superclass_has_no_shuffled_protocol():
    net = PreActResNet(10, num_classes=4, num_superclasses=1).eval()
    scores = protocol_scores(net, torch.randn(5, net.num_features), {}, torch.zeros(5, dtype=torch.long), [0] * 4,
                             "softmax", torch.Generator())
    assert set(scores) == {"oracle", "inferred"}


def test_evaluation_options():
    base = {"inferred_rule": "softmax", "metrics_protocol": "inferred", "hierarchy": "default", "shuffle_seed": 0}
    assert evaluation_options(base) == {"inferred_rule": "softmax", "metrics_protocol": "inferred", "shuffle_seed": 0}
    for bad in ({"inferred_rule": "distance"}, {"metrics_protocol": "best"}):
        with pytest.raises(EvaluationConfigError, match=next(iter(bad))):
            evaluation_options({**base, **bad})


def test_confusion_figure_orders_classes_by_superclass():
    table = [1, 0, 1, 0]
    assert superclass_order(table, 4) == [1, 3, 0, 2]
    fig = confusion_figure(hand_confusion(), table, ["a", "b", "c", "d"], "title")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b (s0)", "d (s0)", "a (s1)", "c (s1)"]
    assert np.allclose(ax.images[0].get_array().sum(axis=1), 1)  # rows normalised
    assert len(ax.lines) == 2  # one horizontal and one vertical line between the two superclasses


def test_hierarchy_spearman_is_scipys_on_cifar100s_five_level_tree():
    """Cosine distances of the class vectors against the LCA heights of CIFAR-100's 5-level tree (fine -> coarse ->
    8 -> 4 -> 2 -> root), read here from the CSV and built by hand; a 2-level tree (fine -> coarse) gives another ρ."""
    with open(Path(__file__).resolve().parents[2] / "src" / "data" / "cifar100_levels.csv") as f:
        columns = list(zip(*[[int(v) for v in row] for row in list(csv.reader(f))[1:]]))
    fine, levels = columns[0], columns[1:]
    assert list(fine) == list(range(100)) and len(levels) == 4
    h = hand_heights(levels)
    vectors = np.random.default_rng(0).normal(size=(100, 16)) + 2 * np.eye(100, 16)
    # class vectors that carry the tree: a shared part per coarse group and per level-3 group
    vectors += np.random.default_rng(1).normal(size=(20, 16))[list(levels[0])]
    vectors += np.random.default_rng(2).normal(size=(8, 16))[list(levels[1])]
    pairs = np.triu_indices(100, 1)
    expected = stats.spearmanr(pdist(vectors, "cosine"), h[pairs]).statistic
    tree = cifar100_tree([f"c{i}" for i in range(100)])
    assert hierarchy_spearman(vectors, tree) == pytest.approx(expected, abs=1e-12)
    two_levels = stats.spearmanr(pdist(vectors, "cosine"), hand_heights(levels[:1])[pairs]).statistic
    assert abs(two_levels - expected) > 1e-3


def test_a_run_reports_every_protocol_and_the_hierarchy_metrics(run_train, tmp_path):
    scored = HandScore()
    record = run_train("case=case4", "optimizer.momentum=0.9", "optimizer.lr=0.1",
                       "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", callbacks=[scored])
    run = tmp_path / "run"
    assert record["test_error_oracle"] == pytest.approx(record["test_error"], abs=1e-4)
    hand = scored.scores
    assert record["test_error_inferred"] == pytest.approx(hand["test_error_inferred"], abs=1e-4)
    assert record["test_error_shuffled"] == pytest.approx(hand["test_error_shuffled"], abs=1e-4)
    # The superclass metrics of the inferred predictions (eval.metrics_protocol), counted image by image.
    t = torch.as_tensor(record["superclasses"])
    predicted, label = hand["predicted_inferred"], hand["label"]
    same, wrong = t[predicted] == t[label], predicted != label
    assert record["superclass_acc"] == pytest.approx(100 * same.float().mean().item(), abs=1e-4)
    assert record["within_superclass_mistakes"] == pytest.approx(100 * (same & wrong).sum().item() / wrong.sum().item(),
                                                                 abs=1e-4)
    per = [100 * wrong[t[label] == j].float().mean().item() for j in range(3)]
    assert record["per_superclass_error"] == pytest.approx(per, abs=1e-4)
    # scipy's Spearman of the final class vectors' cosine distances against the LCA heights of the tree the
    # hierarchy metrics use by default on digits (eval.hierarchy=default: case1, digit >= 5), not the run's case4
    assert record["hierarchy_name"] == "case1"
    h = hand_heights([[int(c >= 5) for c in range(10)]])
    pairs = np.triu_indices(10, 1)
    expected = stats.spearmanr(pdist(hand["class_vectors"], "cosine"), h[pairs]).statistic
    assert record["hierarchy_spearman"] == pytest.approx(expected, abs=1e-9)
    assert record["eval_hierarchy"] == record["superclasses"] and record["inferred_rule"] == "softmax"
    assert json.loads((run / "metrics.json").read_text()) == record
    assert (run / "confusion.png").stat().st_size > 1000
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb")).Reload()
    assert "test/confusion" in events.Tags()["images"]
    assert {"test/error_inferred", "test/error_shuffled", "test/superclass_acc"} <= set(events.Tags()["scalars"])


def test_baseline_columns_are_equal_and_scored_against_case1(run_train):
    scored = HandScore(rows=512)  # fast_dev_run: one test batch
    record = run_train("case=baseline", "trainer.fast_dev_run=true", callbacks=[scored])
    # No block, no hint to withhold: every protocol is the plain network's error on that batch.
    hand = scored.scores
    for protocol in ("oracle", "inferred", "shuffled"):
        assert record[f"test_error_{protocol}"] == pytest.approx(hand["test_error"], abs=1e-4)
    assert record["eval_hierarchy"] == [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    t = torch.as_tensor(record["eval_hierarchy"])
    assert record["superclass_acc"] == pytest.approx(
        100 * (t[hand["predicted"]] == t[hand["label"]]).float().mean().item(), abs=1e-4)
    assert len(record["per_superclass_error"]) == 2


def test_bad_eval_option_stops_before_the_run_starts(cfg_factory, tmp_path):
    from src.train import train

    with pytest.raises(EvaluationConfigError, match=r"eval.inferred_rule=distance is not one of \['softmax', 'logit'\]"):
        train(cfg_factory("eval.inferred_rule=distance"), tmp_path)
    assert not (tmp_path / "metrics.json").exists()
