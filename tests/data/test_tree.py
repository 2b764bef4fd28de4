"""The class tree (src/data/tree.py) and the cases that resolve to it (src/data/superclasses.py)."""
import csv
from collections import defaultdict

import numpy as np
import pytest

from src.data.superclasses import (CIFAR100_LEVELS, SuperclassError, cifar100_tree, dataset_cases,
                                   evaluation_tree, resolve_case)
from src.data.tree import ClassTree, Level, TreeError, as_tree

# Three levels over six classes: pairs {0,1} {2,3} {4,5}, halves {0,1,2,3} {4,5}, the root.
TOY = ClassTree("toy", "abcdef", [Level("pair", (0, 0, 1, 1, 2, 2), ("p", "q", "r")),
                                  Level("half", (0, 0, 0, 0, 1, 1), ("x", "y"))])


def test_lca_heights_of_a_three_level_tree():
    assert TOY.lca_heights.tolist() == [  # 0 self, 1 same pair, 2 same half, 3 the root
        [0, 1, 2, 2, 3, 3], [1, 0, 2, 2, 3, 3], [2, 2, 0, 1, 3, 3],
        [2, 2, 1, 0, 3, 3], [3, 3, 3, 3, 0, 1], [3, 3, 3, 3, 1, 0]]
    assert TOY.path_lengths[0].tolist() == [0, 2, 4, 4, 6, 6]
    assert TOY.level_names == ("pair", "half") and TOY.table("half") == [0, 0, 0, 0, 1, 1]
    assert repr(TOY) == "ClassTree('toy': 6 -> 3 -> 2 -> 1)"


def test_a_table_is_a_two_level_tree():
    tree = as_tree([1, 1, 0])
    assert tree.lca_heights.tolist() == [[0, 1, 2], [1, 0, 2], [2, 2, 0]]
    assert as_tree(None) is None and as_tree(TOY) is TOY


def test_a_group_with_two_parents_is_refused_in_one_line():
    with pytest.raises(TreeError, match="group q of level 'pair' lies in groups \\[0, 1\\] of level 'half'") as e:
        ClassTree("bad", "abcd", [Level("pair", (0, 0, 1, 1), ("p", "q")), Level("half", (0, 0, 0, 1), ("x", "y"))])
    assert "\n" not in str(e.value)
    with pytest.raises(TreeError, match="maps 3 classes"):
        ClassTree("bad", "abcd", [Level("pair", (0, 0, 1), ("p", "q"))])


def test_cifar100_tree_counts_and_one_parent_each():
    with open(CIFAR100_LEVELS, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = ["fine", "coarse", "level3", "level2", "level1"]
    assert [len({r[c] for r in rows}) for c in columns] == [100, 20, 8, 4, 2]
    for child, parent in zip(columns, columns[1:]):
        parents = defaultdict(set)
        for r in rows:
            parents[r[child]].add(r[parent])
        assert all(len(p) == 1 for p in parents.values()), child  # every node has exactly one parent
    tree = cifar100_tree([f"c{i}" for i in range(100)])
    assert [len(level.group_names) for level in tree.levels] == [20, 8, 4, 2]
    assert tree.lca_heights.max() == 5 and np.all(np.diag(tree.lca_heights) == 0)
    cases = dataset_cases("cifar100", tree.class_names, tree)
    assert list(cases) == ["coarse", "level3", "level2", "level1"]
    assert all(c.tree is tree for c in cases.values()) and cases["level2"].num_superclasses == 4


def test_cases_and_the_evaluation_tree():
    names = [str(d) for d in range(10)]
    cases = dataset_cases("mnist", names)
    case4 = resolve_case({"name": "case4"}, cases, names, "mnist")
    assert case4 is cases["case4"] and case4.table == [0, 2, 1, 1, 2, 1, 0, 2, 0, 0]
    assert evaluation_tree("default", cases, case4) is cases["case1"].tree  # one tree for every row of a report
    assert evaluation_tree(None, cases, case4) is None
    with pytest.raises(SuperclassError, match="unknown case 'coarse' for mnist"):
        resolve_case({"name": "coarse"}, cases, names, "mnist")
    with pytest.raises(SuperclassError, match="eval.hierarchy=custom .* needs case=custom"):
        evaluation_tree("custom", cases, case4)


def test_a_custom_file_may_give_several_levels(tmp_path):
    names = [str(d) for d in range(6)]
    path = tmp_path / "tree.yaml"
    path.write_text("levels:\n  pair: {p: [0, 1], q: [2, 3], r: [4, 5]}\n  half: {x: [0, 1, 2, 3], y: [4, 5]}\n")
    case = resolve_case({"name": "custom", "file": str(path), "mapping": None, "level": "half"}, {}, names)
    assert case.table == [0, 0, 0, 0, 1, 1] and case.tree.lca_heights.tolist() == TOY.lca_heights.tolist()
    assert resolve_case({"name": "custom", "file": str(path), "mapping": None}, {}, names).level == "pair"
    assert evaluation_tree("default", {}, case) is case.tree  # no named cases: the run's own tree
    path.write_text("levels:\n  pair: {p: [0, 1], q: [2, 3], r: [4, 5]}\n  half: {x: [0, 1, 2], y: [3, 4, 5]}\n")
    with pytest.raises(TreeError, match="exactly one parent"):
        resolve_case({"name": "custom", "file": str(path), "mapping": None}, {}, names)
