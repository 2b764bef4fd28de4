"""ProxyDR's CIFAR-100 tree (eval.hierarchy=proxydr) is the official table.

Official: GitHub hjk92g/ProxyDR at commit aba6412d5becdc25e55e52e4f8da2421c5c3eef7, ``CIFAR100_cls.csv`` (columns
Class, Path, Number; CRLF line ends) and ``eval_cifar100.py`` ``calc_dist`` (mode 'diff'), re-typed below. The
file is not copied: the test rebuilds its bytes from src/data/cifar100_proxydr.csv and compares their SHA-256
with the official file's.
"""
import csv
import hashlib

import numpy as np
import pytest

from src.data.superclasses import CIFAR100_PROXYDR, cifar100_proxydr_tree, cifar100_tree, dataset_cases, evaluation_tree
from src.run.errors import UserError

COMMIT = "aba6412d5becdc25e55e52e4f8da2421c5c3eef7"
OFFICIAL_SHA256 = "7d257d96ccecf6979283e867ca1654692849075db05be4d5de7734ddf552d903"  # `git show <commit>:CIFAR100_cls.csv`


def _rows():
    with open(CIFAR100_PROXYDR, newline="") as f:
        return list(csv.DictReader(f))


def _paths():
    return [[r["kingdom"], r["group"], r["superclass"], r["name"]] for r in _rows()]


def calc_dist(l1, l2):
    len1, len2 = len(l1), len(l2)
    chk_sm = -1
    for i in range(np.minimum(len1, len2)):
        if l1[i] == l2[i]:
            chk_sm = i
        else:
            break
    return (len1 - chk_sm - 1) + (len2 - chk_sm - 1)


def test_the_table_rebuilds_the_official_file_byte_for_byte():
    text = "Class,Path,Number\r\n" + "".join(f"{r['name']},{'/'.join(p)},{r['fine']}\r\n"
                                            for r, p in zip(_rows(), _paths()))
    assert hashlib.sha256(text.encode()).hexdigest() == OFFICIAL_SHA256


def test_tree_distances_equal_calc_dist_and_levels_have_3_7_20_groups():
    names = [r["name"] for r in _rows()]
    tree = cifar100_proxydr_tree(names)
    assert [len(level.group_names) for level in tree.levels] == [20, 7, 3]
    paths = _paths()
    official = np.array([[calc_dist(a, b) for b in paths] for a in paths])
    np.testing.assert_array_equal(tree.path_lengths, official)
    # the finding: about half the class pairs have the same LCA height in HAF's tree and ProxyDR's
    same = (tree.lca_heights == cifar100_tree(names).lca_heights)[~np.eye(100, dtype=bool)].mean()
    assert same == pytest.approx(0.485, abs=0.001)


def test_eval_hierarchy_proxydr_needs_cifar100():
    names = [f"c{i}" for i in range(100)]
    real = cifar100_tree(names)
    cases = dataset_cases("cifar100", names, real)
    assert evaluation_tree("proxydr", cases, cases["coarse"], real).name == "proxydr"
    digits = dataset_cases("digits", [str(c) for c in range(10)])
    with pytest.raises(UserError, match="needs dataset=cifar100"):
        evaluation_tree("proxydr", digits, digits["case1"], None)


@pytest.mark.slow   # ~20 s idle: a depth-10 network on 100 classes
def test_a_cifar100_random_tree_haframe_run_scored_on_proxydrs_tree(run_train, tmp_path):
    from test_cifar100 import write_cifar100

    write_cifar100(tmp_path / "data")
    record = run_train("dataset=cifar100", f"dataset.data_dir={tmp_path / 'data'}", "dataset.download=false",
                       "dataset.verify_checksums=false", "dataset.val_size=100", "arm=haframe_coarse_random",
                       "eval.hierarchy=proxydr", "depth=10", "trainer.fast_dev_run=true")
    assert record["status"] == "finished" and record["hierarchy_name"] == "proxydr" and record["case"] == "random"
    assert set(record["level_acc"]) == {"class", "superclass", "group", "kingdom"}
    # heights 1..4 on a three-level tree; 100 test images, so top1_acc % is the number right
    assert len(record["mistakes_by_height"]) == 4
    assert sum(record["mistakes_by_height"]) == round(100 - record["top1_acc"])
