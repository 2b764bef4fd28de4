"""MBM's metrics (top-k accuracy, best-of-top-k distance, mistakes by height) and CRM's ECE / MCE equal the
official code on identical inputs.

Official code, re-typed below:
- GitHub fiveai/making-better-mistakes at commit f0bb7d0a7c4a9c7c9517045a4be4446e9baf824f:
  ``better_mistakes/model/performance.py`` ``accuracy``; ``better_mistakes/model/run_xent.py`` (``topK_hdist``,
  ``hdist_top_accums``, ``mistakes_ids``), on one batch holding every image.
- GitHub sgk98/CRM-Better-Mistakes at commit 51373a8b48c76f67392212dd505ee69d9b337ef0: ``src/helper.py``
  ``guo_ECE``, ``MCE`` (with ``ECE_helper``, ``MCE_helper``, ``compute_acc_bin``; ece_full / mce_full False).
"""
import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from src.evaluation.mistakes import calibration_errors, mistake_record, ranking
from src.data.tree import ClassTree, Level

MBM_COMMIT = "f0bb7d0a7c4a9c7c9517045a4be4446e9baf824f"
CRM_COMMIT = "51373a8b48c76f67392212dd505ee69d9b337ef0"
TREE = ClassTree("toy", "abcdefgh", [Level("pair", (0, 0, 1, 1, 2, 2, 3, 3), tuple("pqrs")),
                                     Level("half", (0, 0, 0, 0, 1, 1, 1, 1), ("x", "y"))])


# --- CRM, src/helper.py ---------------------------------------------------------------------------
def compute_acc_bin(conf_thresh_lower, conf_thresh_upper, conf, pred, true):
    filtered_tuples = [x for x in zip(pred, true, conf)
                       if (x[2] > conf_thresh_lower or conf_thresh_lower == 0) and x[2] <= conf_thresh_upper]
    if len(filtered_tuples) < 1:
        return 0.0, 0.0, 0
    correct = len([x for x in filtered_tuples if x[0] == x[1]])
    len_bin = len(filtered_tuples)
    avg_conf = sum([x[2] for x in filtered_tuples]) / len_bin
    return float(correct) / len_bin, avg_conf, len_bin


def guo_ECE(probs, y_true, bins=15):
    probs, y_true = np.array(probs), np.array(y_true)
    preds, confs = np.argmax(probs, axis=1), np.max(probs, axis=1)
    bin_size = 1 / bins
    ece = 0
    for conf_thresh in np.arange(bin_size, 1 + bin_size, bin_size):
        acc, avg_conf, len_bin = compute_acc_bin(conf_thresh - bin_size, conf_thresh, confs, preds, y_true)
        ece += np.abs(acc - avg_conf) * len_bin / len(confs)
    return ece


def MCE(probs, y_true, bins=15):
    probs, y_true = np.array(probs), np.array(y_true)
    preds, confs = np.argmax(probs, axis=1), np.max(probs, axis=1)
    bin_size = 1 / bins
    cal_errors = []
    for conf_thresh in np.arange(bin_size, 1 + bin_size, bin_size):
        acc, avg_conf, count = compute_acc_bin(conf_thresh - bin_size, conf_thresh, confs, preds, y_true)
        cal_errors.append(np.abs(acc - avg_conf))
    return np.max(np.asarray(cal_errors))


# --- MBM, performance.py and run_xent.py --------------------------------------------------------------
def accuracy(output, target, ks=(1,)):
    maxk = max(ks)
    batch_size = target.size(0)
    _, pred_ = output.topk(maxk, 1, True, True)
    pred = pred_.t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum(0, keepdim=True).mul_(1.0 / batch_size) for k in ks], pred_


def mbm_metrics(output, target, distances, ks=(1, 5)):
    accuracies, predicted = accuracy(output, target, ks=ks)
    topk_hdist = np.empty([len(target), max(ks)])
    for i in range(len(target)):
        for j in range(max(ks)):
            topk_hdist[i, j] = distances[int(predicted[i][j]), int(target[i])]
    mistakes_ids = np.where(topk_hdist[:, 0] != 0)[0]
    hdist_top = [np.mean([np.min(topk_hdist[b, :k]) for b in range(len(target))]) for k in ks]
    return [a.item() for a in accuracies], hdist_top, topk_hdist[mistakes_ids, 0]


def test_topk_accuracy_best_distance_and_mistake_heights_equal_mbm():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(300, 8, generator=g)              # continuous: no ties, so topk's order is the ranking's
    label = torch.randint(0, 8, (300,), generator=g)
    record = mistake_record(scores, label, TREE)
    accuracies, hdist_top, mistake_heights = mbm_metrics(scores, label, TREE.lca_heights)
    assert record["top1_acc"] == pytest.approx(100 * accuracies[0], abs=1e-4)   # MBM sums in float32
    assert record["top5_acc"] == pytest.approx(100 * accuracies[1], abs=1e-4)
    assert record["hierarchical_distance_top"] == pytest.approx({"1": hdist_top[0], "5": hdist_top[1]}, abs=1e-12)
    assert record["mistakes_by_height"] == np.bincount(mistake_heights.astype(int), minlength=4)[1:].tolist()
    assert sum(record["mistakes_by_height"]) == round(300 * (1 - accuracies[0]))
    # best of the top 1 is the top 1: HD@1
    assert record["hierarchical_distance_top"]["1"] == pytest.approx(record["hierarchical_distance"]["1"])


def test_mistakes_by_height_by_hand():
    # predictions 4, 0, 4, 6 for classes 0, 2, 4, 5: heights 3 (other half), 2 (same half), -, 2
    scores = torch.full((4, 8), -1.0)
    scores[torch.arange(4), torch.tensor([4, 0, 4, 6])] = 1.0
    record = mistake_record(scores, torch.tensor([0, 2, 4, 5]), TREE)
    assert record["mistakes_by_height"] == [0, 2, 1]


@pytest.mark.parametrize("seed", [0, 1])
def test_ece_and_mce_equal_crm_on_random_and_saturated_probabilities(seed):
    g = torch.Generator().manual_seed(seed)
    logits = 8 * torch.randn(500, 10, generator=g)
    logits[:100, 0] = 60.0                                  # saturated: float32 confidence exactly 1.0
    label = torch.randint(0, 10, (500,), generator=g)
    p = logits.softmax(1)
    assert (p.max(1).values == 1.0).sum() >= 100
    ece, mce = calibration_errors(p, label)
    assert ece == pytest.approx(guo_ECE(p.double().numpy(), label.numpy()), abs=1e-12)
    assert mce == pytest.approx(MCE(p.double().numpy(), label.numpy()), abs=1e-12)


def test_the_issues_minimal_saturated_input():
    """logits [[30, 0], [3, 0]], labels [1, 0]: both confidences in the last bin (14/15, 1], one right, one wrong:
    ECE = |1/2 − (1 + σ(3))/2| = 0.4763. torchmetrics' bucketize(right=True) − 1 puts the float32 confidence 1.0
    in a 16th bin it never counts, and gives another value."""
    logits, label = torch.tensor([[30.0, 0.0], [3.0, 0.0]]), torch.tensor([1, 0])
    p = logits.softmax(1)
    assert p[0, 0].item() == 1.0
    expected = abs(0.5 - (1 + torch.sigmoid(torch.tensor(3.0)).item()) / 2)
    ece, mce = calibration_errors(p, label)
    assert ece == pytest.approx(0.4763, abs=5e-5) and ece == pytest.approx(expected, abs=1e-7)
    assert mce == pytest.approx(expected, abs=1e-7)                # one non-empty bin: MCE = ECE
    assert ece == pytest.approx(guo_ECE(p.double().numpy(), label.numpy()), abs=1e-12)
    old = float(MulticlassCalibrationError(num_classes=2, n_bins=15, norm="l1")(p, label))
    assert abs(old - ece) > 0.01                                   # today's binning fails this test
    # the record computes calibration from float64 probabilities of the scores: the same bins here
    assert mistake_record(logits, label, None)["ece"] == pytest.approx(expected, abs=1e-6)


def test_ties_in_scores_rank_to_the_lower_index_for_topk():
    assert ranking(torch.tensor([[0.0, 1.0, 1.0]])).tolist() == [[1, 2, 0]]
