"""The random-tree control: case=random keeps the named case's shape and permutes its classes."""
import numpy as np
import pytest

from src.data.random_tree import permuted_tree
from src.data.superclasses import cifar100_tree, dataset_cases, evaluation_tree, resolve_case
from src.run.errors import UserError

DIGITS = [str(c) for c in range(10)]


def _shape(tree):
    return [sorted(np.bincount(level.table).tolist()) for level in tree.levels]


@pytest.mark.parametrize("source", ["case1", "case4"])
def test_same_shape_classes_permuted_by_the_seed(source):
    cases = dataset_cases("digits", DIGITS)
    case = resolve_case({"name": "random", "of": source, "shuffle_seed": 3}, cases, DIGITS, "digits")
    real = cases[source]
    assert case.name == "random" and case.level == real.level and case.num_superclasses == real.num_superclasses
    assert _shape(case.tree) == _shape(real.tree)
    # class c sits where class π(c) sat
    pi = np.random.default_rng(3).permutation(10)
    assert case.table == [real.table[p] for p in pi]
    again = resolve_case({"name": "random", "of": source, "shuffle_seed": 3}, cases, DIGITS, "digits")
    other = resolve_case({"name": "random", "of": source, "shuffle_seed": 4}, cases, DIGITS, "digits")
    assert again.table == case.table and other.table != case.table


def test_cifar100_five_levels_keep_their_sizes_and_nesting():
    tree = cifar100_tree([f"c{i}" for i in range(100)])
    random = permuted_tree(tree, 0)                 # ClassTree validates the nesting: one parent per group
    assert _shape(random) == _shape(tree) and random.level_names == tree.level_names
    assert np.bincount(random.lca_heights.ravel()).tolist() == np.bincount(tree.lca_heights.ravel()).tolist()
    # the meaning is gone: few class pairs keep their LCA height
    same = (random.lca_heights == tree.lca_heights)[~np.eye(100, dtype=bool)].mean()
    assert same < 0.5


def test_eval_hierarchy_random_is_the_runs_own_tree_and_bad_input_is_one_line():
    cases = dataset_cases("digits", DIGITS)
    case = resolve_case({"name": "random", "of": "case2", "shuffle_seed": 0}, cases, DIGITS, "digits")
    assert evaluation_tree("random", cases, case) is case.tree
    assert evaluation_tree("default", cases, case) is cases["case1"].tree     # the real tree by default
    with pytest.raises(UserError, match="needs case=random"):
        evaluation_tree("random", cases, cases["case1"])
    for bad in ({"of": "nope", "shuffle_seed": 0}, {"of": "case1", "shuffle_seed": "x"}, {"of": None, "shuffle_seed": 0}):
        with pytest.raises(UserError) as error:
            resolve_case({"name": "random", **bad}, cases, DIGITS, "digits")
        assert "\n" not in str(error.value)


def test_a_random_tree_run_records_and_trains_hxe(run_train):
    record = run_train("trainer.fast_dev_run=true", "case=random", "case.of=case3", "case.shuffle_seed=1", "method=hxe")
    assert record["case"] == "random" and record["hierarchy_name"] == "case1"   # scored on the real tree
    cases = dataset_cases("digits", DIGITS)
    assert record["superclasses"] == resolve_case({"name": "random", "of": "case3", "shuffle_seed": 1}, cases,
                                                  DIGITS).table


@pytest.mark.parametrize("method", ["hxe", "soft_labels", "haframe"])
def test_the_control_trains_the_method_on_the_permuted_tree(tmp_path, method):
    """Not only the record: the method built for case=random holds the permuted tree, and its loss is the loss of
    that tree (a control trained on the real tree would measure the real tree twice)."""
    import torch

    from helpers import FAST, compose_cfg
    from src.models.method import NetOutput
    from src.train import build

    cfg = compose_cfg([*FAST, "case=random", "case.of=case3", "case.shuffle_seed=1", f"method={method}"])
    _, module, _ = build(cfg, tmp_path)
    real = dataset_cases("digits", DIGITS)["case3"].tree
    permuted = permuted_tree(real, 1)
    tree = module.method.tree
    assert [level.table for level in tree.levels] == [level.table for level in permuted.levels]
    assert np.array_equal(tree.lca_heights, permuted.lca_heights)
    assert not np.array_equal(tree.lca_heights, real.lca_heights)
    if method == "haframe":                  # the fixed frame's similarities come from the permuted tree
        from src.models.haframe import haf_frame
        expected = haf_frame(permuted.lca_heights, module.method.haf_gamma)[1]
        np.testing.assert_allclose(module.net.fc.similarity.numpy(), expected, atol=1e-6)
        return
    logits, label = torch.randn(10, 10), torch.arange(10)
    ours = module.method.loss(NetOutput(logits), label, label)
    if method == "hxe":
        from src.models.hxe import hierarchical_cross_entropy
        expected = hierarchical_cross_entropy(logits, label, permuted, module.method.alpha)
    else:
        from src.models.soft_labels import soft_label_loss, soft_label_matrix
        s = torch.as_tensor(soft_label_matrix(permuted.lca_heights, module.method.beta), dtype=torch.float32)
        expected = soft_label_loss(logits, label, s)
    torch.testing.assert_close(ours, expected)
