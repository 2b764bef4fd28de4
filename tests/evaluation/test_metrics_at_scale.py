"""The metrics at 10,000 classes (issue 24): the same numbers as the dense definitions, without (N, K, K) arrays.

The references below are the definitions as they were before (src/evaluation/mistakes.py at 84666e1): a full stable sort for
the rankings and CRM's expected distance as the (N, K) × (K, K) product with h in float64."""
import numpy as np
import pytest
import torch

from bench.metrics import synthetic_tree
from src.evaluation.mistakes import (CHUNK, MistakeMetrics, calibration_error, crm_scores, crm_scores_by_levels,
                          hierarchical_distance, level_accuracy, mistake_record, mistake_severity, ranking,
                          top_ranking)
from src.data.tree import ClassTree, Level


def dense_mistake_record(scores, label, tree):
    """The reference: src/evaluation/mistakes.py's mistake_record before the change (issue 25's fields included,
    from its dense functions of the whole split), re-typed."""
    from src.evaluation.mistakes import (best_hierarchical_distance, calibration_errors, mistakes_by_height,
                                         top_k_accuracy)

    scores = scores.detach().float()
    probabilities = scores.softmax(dim=1)
    heights = torch.tensor(np.asarray(tree.lca_heights, dtype=np.int64))
    order = ranking(scores)
    crm = ranking(crm_scores(probabilities, heights))
    ece, mce = calibration_errors(scores.double().softmax(dim=1), label)
    return {"ece": ece, "mce": mce, **top_k_accuracy(order, label), "hierarchy_name": tree.name,
            "mistake_severity": mistake_severity(order[:, 0], label, heights),
            "hierarchical_distance": hierarchical_distance(order, label, heights),
            "level_acc": level_accuracy(order[:, 0], label, tree),
            "hierarchical_distance_top": best_hierarchical_distance(order, label, heights),
            "mistakes_by_height": mistakes_by_height(order[:, 0], label, heights),
            "test_error_crm": float(100 * (crm[:, 0] != label).double().mean()),
            "mistake_severity_crm": mistake_severity(crm[:, 0], label, heights),
            "hierarchical_distance_crm": hierarchical_distance(crm, label, heights)}


def test_lca_heights_are_the_dense_definition_in_the_smallest_dtype():
    tree = synthetic_tree(300, seed=1)
    h = np.full((300, 300), len(tree.levels) + 1)
    for i in range(len(tree.levels), 0, -1):  # the old construction
        t = np.asarray(tree.levels[i - 1].table)
        h[t[:, None] == t[None, :]] = i
    np.fill_diagonal(h, 0)
    assert tree.lca_heights.dtype == np.uint8 and np.array_equal(tree.lca_heights, h)
    assert tree.lca_heights is tree.lca_heights and not tree.lca_heights.flags.writeable  # one, cached
    deep = ClassTree("deep", "ab", [Level(f"l{i}", (0, 1), ("x", "y")) for i in range(300)])
    assert deep.lca_heights.dtype == np.uint16 and deep.lca_heights[0, 1] == 301


@pytest.mark.parametrize("ties", [False, True])
def test_top_ranking_is_the_stable_sorts_first_k(ties):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(500, 60, generator=g)
    if ties:  # few distinct values: ties everywhere, across the k-th place too, and -inf
        scores = scores.round()
        scores[::7, ::3] = float("-inf")
        scores[3] = 1.0
    for k in (1, 5, 20, 60):
        assert torch.equal(top_ranking(scores, k), ranking(scores)[:, :k]), k


def test_crm_by_levels_equals_the_dense_product():
    tree = synthetic_tree(200, seed=2)
    g = torch.Generator().manual_seed(1)
    p = (2 * torch.randn(300, 200, generator=g)).softmax(1)
    dense = crm_scores(p, torch.tensor(np.asarray(tree.lca_heights, dtype=np.int64)))
    torch.testing.assert_close(crm_scores_by_levels(p, tree), dense, rtol=0, atol=1e-12)
    assert torch.equal(ranking(crm_scores_by_levels(p, tree))[:, :20], ranking(dense)[:, :20])


@pytest.mark.parametrize("seed", [0, 1])
def test_mistake_record_equals_the_dense_reference_on_random_scores(seed):
    """Random logits on a random 7-level tree, more images than one chunk, rounded logits for ties."""
    tree = synthetic_tree(150, seed=seed)
    g = torch.Generator().manual_seed(seed)
    scores = (3 * torch.randn(CHUNK + 300, 150, generator=g)).round(decimals=1)
    label = torch.randint(0, 150, (len(scores),), generator=g)
    new, old = mistake_record(scores, label, tree), dense_mistake_record(scores, label, tree)
    assert new == old  # ECE and MCE too: per-image confidences kept, binned once as CRM's guo_ECE


def test_batches_add_up_to_one_call():
    tree = synthetic_tree(40, seed=3)
    g = torch.Generator().manual_seed(3)
    scores, label = torch.randn(700, 40, generator=g), torch.randint(0, 40, (700,), generator=g)
    metrics = MistakeMetrics(tree, 40)
    for start in range(0, 700, 97):
        metrics.update(scores[start:start + 97], label[start:start + 97])
    assert metrics.compute() == mistake_record(scores, label, tree)


# --- ProxyDR's metrics (src/evaluation/hierarchy.py) and the superclass metrics of a sparse confusion ------------------------

def dense_wpgma_clusters(d):
    """The reference: src/evaluation/hierarchy.py's wpgma_clusters before the change (np.delete each step, O(K³))."""
    d = np.array(d, dtype=np.float64)
    clusters = [frozenset([i]) for i in range(len(d))]
    merges = []
    while len(clusters) > 1:
        rows, cols = np.tril_indices(len(d), k=-1)
        values = d[rows, cols]
        last = np.flatnonzero(values == values.min())[-1]
        i, j = int(rows[last]), int(cols[last])
        merged = clusters[i] | clusters[j]
        merges.append(merged)
        d[j, :] = d[:, j] = (d[i, :] + d[j, :]) / 2
        d[j, j] = 0.0
        d = np.delete(np.delete(d, i, axis=0), i, axis=1)
        clusters[j] = merged
        del clusters[i]
    return merges


def dense_rf(class_vectors, tree, distance):
    from src.evaluation.hierarchy import representative_distances

    k = tree.num_classes
    everything = frozenset(range(k))

    def splits(clusters):
        return {c if 0 not in c else everything - c for c in clusters if 2 <= len(c) <= k - 2}

    reference = splits(dense_wpgma_clusters(tree.path_lengths))
    learned = splits(dense_wpgma_clusters(representative_distances(class_vectors, distance)))
    return len(reference ^ learned) / (len(reference) + len(learned))


def dense_mean_corr(class_vectors, tree, distance):
    from scipy.stats import spearmanr

    from src.evaluation.hierarchy import representative_distances

    d, d_t = representative_distances(class_vectors, distance), tree.path_lengths
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = [spearmanr(d[:, i], d_t[:, i]).statistic if np.ptp(d[:, i]) and np.ptp(d_t[:, i]) else np.nan
               for i in range(len(d))]
        return float(np.tanh(np.nanmean(np.arctanh(np.asarray(rho)))))


@pytest.mark.parametrize("seed, ties", [(0, False), (1, True), (2, True)])
def test_wpgma_equals_the_dense_port(seed, ties):
    from src.evaluation.hierarchy import wpgma_clusters

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 4, (70, 3)) if ties else rng.random((70, 3))  # integer points: ties at every step
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    assert wpgma_clusters(d) == dense_wpgma_clusters(d)
    tree = synthetic_tree(90, seed=seed)  # the reference tree: ties everywhere
    assert wpgma_clusters(tree.path_lengths) == dense_wpgma_clusters(tree.path_lengths)
    assert wpgma_clusters(tree.lca_heights) == dense_wpgma_clusters(tree.path_lengths)


@pytest.mark.parametrize("distance", ["euc", "arccos"])
def test_proxydr_metrics_equal_the_dense_definitions(distance):
    from src.evaluation.hierarchy import COLUMNS_PER_BLOCK, hierarchy_mean_corr, hierarchy_rf

    tree = synthetic_tree(COLUMNS_PER_BLOCK + 44, seed=4)  # two column blocks
    w = np.random.default_rng(4).normal(size=(tree.num_classes, 16))
    w[5] = w[7]  # two identical vectors: a tie in every column
    assert hierarchy_mean_corr(w, tree, distance) == pytest.approx(dense_mean_corr(w, tree, distance), abs=1e-12)
    assert hierarchy_rf(w, tree, distance) == dense_rf(w, tree, distance)


def test_sparse_confusion_gives_the_dense_superclass_metrics():
    from src.evaluation.protocols import error, hierarchy_metrics
    from src.evaluation.scale import sparse_confusion

    g = torch.Generator().manual_seed(5)
    label, predicted = torch.randint(0, 30, (2000,), generator=g), torch.randint(0, 30, (2000,), generator=g)
    predicted[:900] = label[:900]
    table = [c % 7 for c in range(30)]
    table[3] = 6  # a superclass without a test image
    label[label % 7 == 6] = 0
    dense = np.bincount((label * 30 + predicted).numpy(), minlength=900).reshape(30, 30)
    sparse = sparse_confusion(label, predicted, 30)
    assert error(sparse) == error(dense)
    assert hierarchy_metrics(sparse, table) == hierarchy_metrics(dense, table)


def test_elementwise_spearman_equals_scipys_on_the_dense_distances():
    from scipy.spatial.distance import pdist
    from scipy.stats import spearmanr

    from src.evaluation.protocols import hierarchy_spearman, tree_distances

    tree = synthetic_tree(120, seed=6)
    w = np.random.default_rng(6).normal(size=(120, 8))
    w[3] = w[9]
    expected = spearmanr(pdist(w, "cosine"), tree_distances(tree)).statistic
    assert hierarchy_spearman(w, tree) == pytest.approx(expected, abs=1e-12)
    assert hierarchy_spearman(w, ClassTree.from_table("one", [0] * 120, [str(c) for c in range(120)])) is None


def test_a_run_above_the_dense_limit_records_the_same_metrics(run_train, tmp_path, monkeypatch):
    """digits with the dense limit lowered below its 10 classes: the sparse path of the test protocols gives the
    record of the dense one (same seed, same weights); confusion.png and hierarchy.npz are left out."""
    import src.evaluation.callbacks

    overrides = ("debug=fast", "case=case1", "trainer.enable_progress_bar=false")
    dense = run_train(*overrides, run_dir=tmp_path / "dense")
    monkeypatch.setattr(src.evaluation.callbacks, "DENSE_CONFUSION_LIMIT", 5)
    sparse = run_train(*overrides, run_dir=tmp_path / "sparse")
    varying = {"duration_s", "train_images_per_s", "git_commit"}
    assert {k: v for k, v in sparse.items() if k not in varying} == {k: v for k, v in dense.items() if k not in varying}
    assert sparse["superclass_acc"] is not None and sparse["test_error_inferred"] is not None
    assert (tmp_path / "dense" / "confusion.png").exists() and not (tmp_path / "sparse" / "confusion.png").exists()
    assert (tmp_path / "dense" / "hierarchy.npz").exists() and not (tmp_path / "sparse" / "hierarchy.npz").exists()


@pytest.mark.parametrize("rule", ["softmax", "logit"])
@pytest.mark.parametrize("position", [3, 2])
def test_inferred_protocol_in_blocks_of_superclasses_equals_all_at_once(monkeypatch, rule, position):
    import src.evaluation.protocols
    from src.evaluation.protocols import protocol_scores
    from src.models import PreActResNet

    torch.manual_seed(0)
    net = PreActResNet(10, num_classes=12, in_channels=3, num_superclasses=5, position=position).eval()
    table = [c % 5 for c in range(12)]
    x = torch.randn(6, 3, 16, 16)
    superclass = torch.tensor(table[:6])
    with torch.no_grad():
        h, extras = net.forward_features(x)
        whole = protocol_scores(net, h, extras, superclass, table, rule, torch.Generator().manual_seed(1))
        monkeypatch.setattr(src.evaluation.protocols, "CANDIDATE_ELEMENTS", 2 * 6 * 12)  # two superclasses per block
        blocks = protocol_scores(net, h, extras, superclass, table, rule, torch.Generator().manual_seed(1))
    assert set(blocks) == set(whole) == {"oracle", "inferred", "shuffled"}
    for name in whole:
        assert blocks[name].dtype == whole[name].dtype
        torch.testing.assert_close(blocks[name], whole[name], rtol=1e-5, atol=1e-5)
        assert torch.equal(blocks[name].argmax(1), whole[name].argmax(1))
