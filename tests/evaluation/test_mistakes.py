"""The field's mistake metrics and CRM (src/evaluation/mistakes.py), checked by hand on a three-level tree."""
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from scipy import stats
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform
from sklearn.metrics import confusion_matrix

from helpers import HandScore, hand_mistakes
from src.evaluation.protocols import hierarchy_metrics
from src.evaluation.mistakes import calibration_error, crm_scores, mistake_record, mistake_severity, ranking
from src.data.tree import ClassTree, Level, as_tree

# pairs {0,1} {2,3} {4,5}, halves {0..3} {4,5}: h = 0 self, 1 same pair, 2 same half, 3 root
TREE = ClassTree("toy", "abcdef", [Level("pair", (0, 0, 1, 1, 2, 2), ("p", "q", "r")),
                                   Level("half", (0, 0, 0, 0, 1, 1), ("x", "y"))])
LABELS = torch.tensor([0, 2, 4, 5])
P = torch.tensor([[0.25, 0.20, 0.10, 0.05, 0.35, 0.05],   # top: 4 0 1 2 3 (3 and 5 tie: the lower first)
                  [0.40, 0.05, 0.30, 0.05, 0.10, 0.10],   # top: 0 2 4 5 1
                  [0.05, 0.05, 0.05, 0.05, 0.60, 0.20],   # top: 4 5 0 1 2
                  [0.10, 0.10, 0.10, 0.10, 0.35, 0.25]],  # top: 4 5 0 1 2
                 dtype=torch.float64)


def test_mistake_metrics_by_hand():
    record = mistake_record(P.log(), LABELS, TREE)
    # predictions 4, 0, 4, 4: mistakes h(4,0) = 3, h(0,2) = 2, h(4,5) = 1
    assert record["mistake_severity"] == pytest.approx(2.0)
    # HD@1 (3 + 2 + 0 + 1)/4; HD@5 the rows' top-5 heights (3+0+1+2+2)/5, (2+0+3+3+2)/5, (0+1+3+3+3)/5,
    # (1+0+3+3+3)/5 = 1.6, 2.0, 2.0, 2.0
    assert record["hierarchical_distance"] == pytest.approx({"1": 1.5, "5": 1.9})  # no k = 20 with 6 classes
    # 1 of 4 right; in the true pair: rows 3, 4; in the true half: rows 2, 3, 4
    assert record["level_acc"] == pytest.approx({"class": 25.0, "pair": 50.0, "half": 75.0})
    # ECE: every mistake's bin has accuracy 0, so it adds its confidences: (0.35 + 0.40 + 0.35 + |1 − 0.60|) / 4
    assert record["hierarchy_name"] == "toy" and record["ece"] == pytest.approx(0.375)


def test_crm_on_a_hand_made_probability_matrix():
    heights = torch.tensor(TREE.lca_heights)
    # expected tree distance Σ_j p_j h(c, j) of every class c, row 1: 1.70 1.75 2.15 2.20 1.85 2.15
    np.testing.assert_allclose(-crm_scores(P, heights)[0], [1.70, 1.75, 2.15, 2.20, 1.85, 2.15], atol=1e-12)
    # row 2: 1.35 1.70 1.55 1.80 2.50 2.50; row 3: 2.65 ×4, 0.80 1.20; row 4: 2.30 ×4, 1.45 1.55
    np.testing.assert_allclose(-crm_scores(P, heights)[1], [1.35, 1.70, 1.55, 1.80, 2.50, 2.50], atol=1e-12)
    record = mistake_record(P.log(), LABELS, TREE)
    # CRM predicts 0, 0, 4, 4: row 1 corrected; mistakes h(0,2) = 2, h(4,5) = 1
    assert record["test_error_crm"] == pytest.approx(50.0)
    assert record["mistake_severity_crm"] == pytest.approx(1.5)
    # CRM top-5 by least cost: (0,1,4,2|5) -> 0+1+3+2+3, (0,2,1,3,4|5) -> 2+0+2+1+3, (4,5,·,·,·) -> 0+1+3+3+3,
    # (4,5,·,·,·) -> 1+0+3+3+3: 1.8, 1.6, 2.0, 2.0
    assert record["hierarchical_distance_crm"] == pytest.approx({"1": 0.75, "5": 1.85})


def test_ties_go_to_the_lower_class_index():
    assert ranking(torch.tensor([[1.0, 3.0, 1.0, 3.0]])).tolist() == [[1, 3, 0, 2]]


def test_ece_15_bins():
    # two images: confidence 0.9 right, 0.55 wrong, in different bins: (1/2)|1 − .9| + (1/2)|0 − .55| = 0.325
    probabilities = torch.tensor([[0.9, 0.05, 0.05], [0.55, 0.40, 0.05]])
    assert calibration_error(probabilities, torch.tensor([0, 1])) == pytest.approx(0.325, abs=1e-6)
    # 0.61 right and 0.69 wrong: apart in 15 bins ([0.600, 0.667), [0.667, 0.733)): (1/2)|1 − .61| + (1/2)|0 − .69|
    # = 0.54; one bin of 10 ([0.6, 0.7)) would give |1/2 − 0.65| = 0.15
    probabilities = torch.tensor([[0.61, 0.20, 0.19], [0.69, 0.30, 0.01]])
    assert calibration_error(probabilities, torch.tensor([0, 1])) == pytest.approx(0.54, abs=1e-6)


def test_without_a_tree_only_ece():
    record = mistake_record(P.log(), LABELS, None)
    assert record["ece"] is not None and record["mistake_severity"] is None and record["hierarchical_distance"] == {}
    assert record["test_error_crm"] is None and record["hierarchy_name"] is None


def test_severity_on_a_two_level_tree_is_two_minus_the_within_superclass_share():
    # h is 1 inside the superclass and 2 across: severity = 1·w + 2·(1 − w) = 2 − w, w the within share
    rng = np.random.default_rng(0)
    table = [0, 0, 0, 1, 1, 2, 2, 2]
    label, predicted = rng.integers(0, 8, 200), rng.integers(0, 8, 200)
    within = hierarchy_metrics(confusion_matrix(label, predicted, labels=range(8)), table)["within_superclass_mistakes"]
    severity = mistake_severity(torch.tensor(predicted), torch.tensor(label), torch.tensor(as_tree(table).lca_heights))
    assert severity == pytest.approx(2 - within / 100, abs=1e-12)


def test_every_run_records_the_mistake_and_crm_fields(run_train):
    scored = HandScore()
    record = run_train("trainer.fast_dev_run=true", callbacks=[scored])  # digits, case1, HAL
    assert record["hierarchy_name"] == "case1" and set(record["hierarchical_distance"]) == {"1", "5"}
    assert set(record["level_acc"]) == {"class", "superclass"}
    assert record["mistake_severity"] == pytest.approx(2 - record["within_superclass_mistakes"] / 100, abs=1e-9)
    assert record["level_acc"]["class"] == pytest.approx(100 - record["test_error_inferred"], abs=1e-9)
    assert record["level_acc"]["superclass"] == pytest.approx(record["superclass_acc"], abs=1e-9)
    # ECE and CRM rescored by hand (helpers.hand_mistakes) from the inferred scores of the final weights.
    hand = hand_mistakes(scored.scores["scores_inferred"], scored.scores["label"], [record["eval_hierarchy"]])
    assert record["ece"] == pytest.approx(hand["ece"], abs=1e-5)
    assert record["test_error_crm"] == pytest.approx(hand["test_error_crm"], abs=1e-9)
    assert record["mistake_severity_crm"] == pytest.approx(hand["mistake_severity_crm"], abs=1e-9)
    assert record["hierarchical_distance_crm"] == pytest.approx(hand["hierarchical_distance_crm"], abs=1e-9)


class SetProxies(pl.Callback):
    """Puts ``vectors`` (K, 3) into the proxy head (zero-padded) before the test pass scores the hierarchy."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = vectors

    def on_test_start(self, trainer, pl_module):
        proxies = pl_module.net.fc.proxies
        with torch.no_grad():
            proxies.zero_()
            proxies[:, :3] = torch.as_tensor(self.vectors, dtype=proxies.dtype)


def _wpgma_splits(d: np.ndarray) -> set:
    """Non-trivial splits (named by the side without class 0) of scipy's WPGMA tree (linkage "weighted")."""
    k, clusters = len(d), [frozenset([i]) for i in range(len(d))]
    for a, b, _, _ in linkage(squareform(d, checks=False), method="weighted"):
        clusters.append(clusters[int(a)] | clusters[int(b)])
    every = frozenset(range(k))
    return {c if 0 not in c else every - c for c in clusters if 2 <= len(c) <= k - 2}


def test_proxydr_metrics_use_the_heads_own_distance(run_train, tmp_path):
    """The hierarchy metrics of an arccos ProxyDR head are scored in arccos, rescored here by hand. The proxies are
    set before the test pass to vectors whose WPGMA trees differ under arccos and euc (seed 33 was searched for
    that), so that rf tells the two metrics apart."""
    from src.evaluation.hierarchy import tree_distance_matrix, wpgma_clusters

    vectors = np.random.default_rng(33).normal(size=(10, 3))
    record = run_train("method=proxydr", "case=baseline", "trainer.fast_dev_run=true",
                       callbacks=[SetProxies(vectors)])  # arccos head (config)
    case1 = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert record["hierarchy_name"] == "case1" and record["eval_hierarchy"] == case1
    w = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cos = np.clip(w @ w.T, -1, 1)
    arccos, euc = np.arccos(cos), np.sqrt(np.maximum(2 - 2 * cos, 0))
    np.fill_diagonal(arccos, 0)
    np.fill_diagonal(euc, 0)
    # The reference tree's splits (WPGMA of the tree distances, class-order ties) are the module's own: only the
    # learned tree depends on the metric.
    every = frozenset(range(10))
    reference = {c if 0 not in c else every - c for c in wpgma_clusters(tree_distance_matrix(case1))
                 if 2 <= len(c) <= 8}
    rf = {name: len(reference ^ _wpgma_splits(d)) / (len(reference) + 7) for name, d in (("arccos", arccos),
                                                                                          ("euc", euc))}
    assert rf["arccos"] != rf["euc"]
    assert record["hierarchy_rf"] == pytest.approx(rf["arccos"], abs=1e-12)
    # mean_corr: Spearman of each class's column against the tree's (0 self, 2 same superclass, 4 across),
    # Fisher-averaged (the same for any monotone map of the angle, so for euc too).
    d_t = np.where(np.equal.outer(case1, case1), 2.0, 4.0)
    np.fill_diagonal(d_t, 0)
    rho = [stats.spearmanr(arccos[:, i], d_t[:, i]).statistic for i in range(10)]
    assert record["hierarchy_mean_corr"] == pytest.approx(np.tanh(np.mean(np.arctanh(rho))), abs=1e-12)
