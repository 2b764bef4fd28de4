"""Issue 36 §1: a case=custom run is scored on its own tree by default, and says so in one start line."""
import logging

from src.data.superclasses import dataset_cases, evaluation_tree, resolve_case

TREE = "levels:\n  superclass: {p: [0, 1], q: [2, 3], r: [4, 5], s: [6, 7], t: [8, 9]}\n" \
       "  half: {x: [0, 1, 2, 3], y: [4, 5, 6, 7, 8, 9]}\n"


def test_the_default_tree_of_a_custom_case_is_its_own(tmp_path):
    names = [str(d) for d in range(10)]
    (tmp_path / "tree.yaml").write_text(TREE)
    cases = dataset_cases("digits", names)
    assert "case1" in cases  # the dataset has named cases: before, default meant case1's tree
    case = resolve_case({"name": "custom", "file": str(tmp_path / "tree.yaml"), "mapping": None, "level": "half"},
                        cases, names, "digits")
    assert evaluation_tree("default", cases, case) is case.tree
    assert evaluation_tree("case1", cases, case) is cases["case1"].tree  # asking for another tree still works


def test_a_custom_run_records_its_own_tree_and_names_it_at_the_start(run_train, tmp_path, caplog):
    (tmp_path / "tree.yaml").write_text(TREE)
    with caplog.at_level(logging.INFO, logger="src.train"):
        record = run_train("case=custom", f"case.file={tmp_path / 'tree.yaml'}", "case.level=half")
    assert record["hierarchy_name"] == "custom"
    assert set(record["level_acc"]) == {"class", "superclass", "half"}
    assert len(record["mistakes_by_height"]) == 3  # heights 1..3 of class > superclass > half > root
    lines = [r.getMessage() for r in caplog.records if r.name == "src.train"]
    assert lines == ["hierarchy metrics scored on tree 'custom' (levels: class > superclass > half; "
                     "eval.hierarchy=default)"]
