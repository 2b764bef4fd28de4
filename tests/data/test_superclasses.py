import pytest

from src.data.superclasses import (SuperclassError, custom_table, groups_to_table, resolve_case,
                                   superclass_table, validate_table)


def test_table1_digit_cases():
    assert superclass_table("mnist", "case1") == [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert superclass_table("svhn", "case2") == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    assert superclass_table("digits", "case3") == [1, 1, 0, 0, 1, 0, 1, 0, 1, 1]
    assert superclass_table("mnist", "case4") == [0, 2, 1, 1, 2, 1, 0, 2, 0, 0]


def test_table1_cifar10_cases():
    assert superclass_table("cifar10", "case1") == superclass_table("mnist", "case1")
    assert superclass_table("cifar10", "case3") == [1, 1, 0, 0, 0, 0, 0, 0, 1, 1]
    # car/truck, cat/dog, deer/horse, airplane/ship, bird/frog
    assert superclass_table("cifar10", "case4") == [3, 0, 4, 1, 2, 1, 4, 2, 3, 0]


@pytest.mark.parametrize("groups, match", [
    ([[0, 1], [1, 2]], "class 1 is in superclass 0 and superclass 1"),
    ([[0, 1], []], "superclass 1 is empty"),
    ([[0, 1]], r"classes \[2\] are in no superclass"),
    ([[0, 1, 2, 3]], "not a class index"),
    ([[0, "x"], [1, 2]], "not a class index"),
])
def test_bad_groups(groups, match):
    with pytest.raises(SuperclassError, match=match):
        groups_to_table(groups, 3)


@pytest.mark.parametrize("table, match", [
    ([0, 1], "2 entries for 3 classes"),
    ([0, -1, 1], "non-negative"),
    ([0, 2, 2], r"superclasses \[1\] have no class"),
    ([0, 1.5, 1], "non-negative integers"),
])
def test_bad_tables(table, match):
    with pytest.raises(SuperclassError, match=match):
        validate_table(table, 3)


def test_errors_are_one_line():
    with pytest.raises(SuperclassError) as e:
        custom_table({"a": ["cat", "dog"], "b": ["dog"]}, ["cat", "dog", "cow"])
    assert "\n" not in str(e.value) and "dog" in str(e.value)


def test_unknown_dataset_or_case():
    with pytest.raises(SuperclassError, match="case=custom"):
        superclass_table("folder", "case1")
    with pytest.raises(SuperclassError, match="unknown case 'case9'"):
        superclass_table("mnist", "case9")


def test_custom_mapping_by_name_and_index(tmp_path):
    names = ["cat", "dog", "car"]
    assert custom_table({"animal": ["cat", "dog"], "vehicle": ["car"]}, names) == ([0, 0, 1], ["animal", "vehicle"])
    assert custom_table([[2], [0, 1]], names)[0] == [1, 1, 0]
    with pytest.raises(SuperclassError, match="unknown class 'cow'"):
        custom_table({"a": ["cow"], "b": ["cat", "dog", "car"]}, names)
    f = tmp_path / "m.yaml"
    f.write_text("animal: [cat, dog]\nvehicle: [car]\n")
    assert resolve_case({"name": "custom", "mapping": None, "file": str(f)}, {}, names).table == [0, 0, 1]
    f.write_text("a: [cat\n")
    with pytest.raises(SuperclassError, match="not valid YAML"):
        resolve_case({"name": "custom", "mapping": None, "file": str(f)}, {}, names)
    with pytest.raises(SuperclassError, match="exactly one of"):
        resolve_case({"name": "custom", "mapping": None, "file": None}, {}, names)
    assert resolve_case({"name": "baseline"}, {}, names) is None
