"""The field's mistake metrics and CRM (src/evaluation/mistakes.py), checked by hand on a three-level tree."""
import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix

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
    assert record["hierarchy_name"] == "toy" and 0 <= record["ece"] <= 1


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
    record = run_train("trainer.fast_dev_run=true")  # digits, case1, HAL
    assert record["hierarchy_name"] == "case1" and set(record["hierarchical_distance"]) == {"1", "5"}
    assert set(record["level_acc"]) == {"class", "superclass"}
    assert record["mistake_severity"] == pytest.approx(2 - record["within_superclass_mistakes"] / 100, abs=1e-9)
    assert record["level_acc"]["class"] == pytest.approx(100 - record["test_error_inferred"], abs=1e-9)
    assert record["level_acc"]["superclass"] == pytest.approx(record["superclass_acc"], abs=1e-9)
    for key in ("ece", "test_error_crm", "mistake_severity_crm"):
        assert isinstance(record[key], float)
    assert set(record["hierarchical_distance_crm"]) == {"1", "5"}


def test_proxydr_metrics_use_the_heads_own_distance(run_train, tmp_path):
    from src.evaluation.hierarchy import hierarchy_mean_corr, hierarchy_rf

    record = run_train("method=proxydr", "case=baseline", "trainer.fast_dev_run=true")  # arccos head (config)
    with np.load(tmp_path / "run" / "hierarchy.npz") as f:
        vectors = f["class_vectors"]
    case1 = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert record["hierarchy_name"] == "case1" and record["eval_hierarchy"] == case1
    assert record["hierarchy_rf"] == hierarchy_rf(vectors, case1, "arccos")
    assert record["hierarchy_mean_corr"] == pytest.approx(hierarchy_mean_corr(vectors, case1, "arccos"), abs=1e-12)
