"""dataset=aircraft on a small copy of FGVC-Aircraft in torchvision's layout: the variant -> family ->
manufacturer tree from the per-image labels, its cases, an end-to-end run, a contradicting label, a missing copy."""
import pytest

import stream_files as sf
from helpers import FAST, compose_cfg

from src.data.benchmarks import AircraftDataModule
from src.data.superclasses import dataset_cases
from src.run.errors import DataMissingError, UserError


@pytest.fixture(scope="module")
def aircraft(tmp_path_factory):
    return sf.aircraft(tmp_path_factory.mktemp("aircraft"))


def test_the_tree_comes_from_the_three_annotation_levels(aircraft):
    dm = AircraftDataModule(data_dir=str(aircraft))
    assert dm.class_names == tuple(v for v, _, _ in sf.AIRCRAFT)
    tree = dm.tree
    assert tree.level_names == ("family", "manufacturer")
    families = [tree.level("family").group_names[g] for g in tree.table("family")]
    makers = [tree.level("manufacturer").group_names[g] for g in tree.table("manufacturer")]
    assert families == [f for _, f, _ in sf.AIRCRAFT] and makers == [m for _, _, m in sf.AIRCRAFT]
    assert set(dataset_cases("aircraft", dm.class_names, tree)) == {"family", "manufacturer"}
    assert tree.lca_heights[2, 3] == 1 and tree.lca_heights[0, 1] == 2 and tree.lca_heights[0, 7] == 3


def test_trainval_trains_and_test_tests(aircraft):
    dm = AircraftDataModule(data_dir=str(aircraft))
    train, test = dm.samples("train"), dm.samples("test")
    assert (len(train), len(test)) == (8 * 6, 8 * 2)
    assert not {p for p, _ in train} & {p for p, _ in test}


@pytest.mark.parametrize("net", ["depth=10", "model=resnet18"])  # the CIFAR-style ResNet and torchvision's ImageNet one
def test_trains_end_to_end_and_is_scored_on_the_three_level_tree(aircraft, tmp_path, net):
    from src.train import train

    cfg = compose_cfg([*FAST, "dataset=aircraft", f"dataset.data_dir={aircraft}", "dataset.image_size=16",
                       "dataset.num_workers=0", "dataset.batch_size=16", net, "case=manufacturer"])
    record = train(cfg, tmp_path)
    assert record["status"] == "finished" and record["superclasses"] == [0, 0, 0, 0, 1, 1, 1, 2]
    assert list(record["level_acc"]) == ["class", "family", "manufacturer"]
    accuracy = list(record["level_acc"].values())
    assert accuracy == sorted(accuracy) and 0 <= record["mistake_severity"] <= 3


def test_a_variant_in_two_families_is_one_line(tmp_path):
    root = sf.aircraft(tmp_path / "a", train=2, test=1)
    labels = root / "fgvc-aircraft-2013b" / "data" / "images_family_test.txt"
    lines = labels.read_text().splitlines()
    lines[0] = lines[0].split(" ")[0] + " A330"  # a 707-320 labelled family A330
    labels.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as error:
        AircraftDataModule(data_dir=str(root)).tree
    assert len(str(error.value).splitlines()) == 1 and "707-320" in str(error.value)


def test_missing_offline_is_one_line_saying_where_to_put_which_files(tmp_path):
    with pytest.raises(DataMissingError) as error:
        AircraftDataModule(data_dir=str(tmp_path), download=False).class_names
    assert len(str(error.value).splitlines()) == 1 and "fgvc-aircraft-2013b/" in str(error.value)
