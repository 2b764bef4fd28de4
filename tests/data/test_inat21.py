"""dataset=inat21_mini on a small copy of iNaturalist 2021 in torchvision's layout: classes, the 7-level tree from
the folder names, its cases, an end-to-end run scored on that tree, and the one-line message when it is missing."""
import pytest

import stream_files as sf
from helpers import FAST, compose_cfg

from src.data.benchmarks import INat21MiniDataModule
from src.data.superclasses import dataset_cases, resolve_case
from src.run.errors import DataMissingError

RANKS = ["genus", "family", "order", "taxonomic_class", "phylum", "kingdom"]  # finest first


@pytest.fixture(scope="module")
def inat(tmp_path_factory):
    return sf.inat21(tmp_path_factory.mktemp("inat"))


def test_the_tree_is_the_taxonomy_of_the_folder_names(inat):
    dm = INat21MiniDataModule(data_dir=str(inat), image_size=16)
    assert len(dm.class_names) == 8 and dm.class_names[0] == "00000_" + "_".join(sf.INAT_SPECIES[0])
    tree = dm.tree
    assert list(tree.level_names) == RANKS
    for level, column in zip(RANKS, range(5, -1, -1)):
        table = tree.table(level)
        for a in range(8):
            for b in range(8):
                # same group <=> same path down to this rank (a genus is its whole path: two Quercus differ)
                same = sf.INAT_SPECIES[a][:column + 1] == sf.INAT_SPECIES[b][:column + 1]
                assert (table[a] == table[b]) == same, (level, a, b)
    assert tree.table("genus")[6] != tree.table("genus")[7]  # Quercus of Fagaceae and of Orchidaceae
    assert tree.lca_heights[0, 1] == 1 and tree.lca_heights[0, 5] == 7  # same genus; different kingdoms (root)


def test_cases_are_the_ranks_with_class_for_the_taxonomic_class(inat):
    dm = INat21MiniDataModule(data_dir=str(inat))
    cases = dataset_cases("inat21_mini", dm.class_names, dm.tree)
    assert set(cases) == {"kingdom", "phylum", "class", "order", "family", "genus"}
    case = resolve_case({"name": "class"}, cases, dm.class_names, "inat21_mini")
    assert case.level == "taxonomic_class" and case.num_superclasses == 5  # Aves, Mammalia, Insecta, Magnoliopsida, Liliopsida
    assert resolve_case({"name": "kingdom"}, cases, dm.class_names).table == [0, 0, 0, 0, 0, 1, 1, 1]


def test_samples_are_every_file_with_its_species(inat):
    dm = INat21MiniDataModule(data_dir=str(inat))
    train, test = dm.samples("train"), dm.samples("test")
    assert len(train) == 8 * 6 and len(test) == 8 * 2
    assert all(f"/2021_train_mini/{dm.class_names[y]}/" in p for p, y in train)
    assert all(f"/2021_valid/{dm.class_names[y]}/" in p for p, y in test)


@pytest.mark.parametrize("net", ["depth=10", "model=resnet18"])  # the CIFAR-style ResNet and torchvision's ImageNet one
def test_trains_end_to_end_and_is_scored_on_the_seven_level_tree(inat, tmp_path, net):
    from src.train import train

    cfg = compose_cfg([*FAST, "dataset=inat21_mini", f"dataset.data_dir={inat}", "dataset.image_size=16",
                       "dataset.num_workers=0", "dataset.batch_size=16", "dataset.val_size=8", net,
                       "case=family", "trainer.max_epochs=2"])
    record = train(cfg, tmp_path)
    assert record["status"] == "finished" and record["hierarchy_name"] == "inat21_mini"
    assert list(record["level_acc"]) == ["class", *RANKS]
    accuracy = list(record["level_acc"].values())
    assert all(a <= b for a, b in zip(accuracy, accuracy[1:]))  # a right genus is a right family, ...
    assert accuracy[0] == pytest.approx(100 - record["test_error_inferred"])
    assert 0 <= record["mistake_severity"] <= 7 and set(record["hierarchical_distance"]) == {"1", "5"}


def test_missing_offline_is_one_line_saying_where_to_put_which_files(tmp_path):
    with pytest.raises(DataMissingError) as error:
        INat21MiniDataModule(data_dir=str(tmp_path), download=False).class_names
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert "2021_train_mini/" in message and "2021_valid/" in message and str(tmp_path) in message
