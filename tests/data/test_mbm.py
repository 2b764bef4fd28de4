"""dataset=tiered_imagenet / inat19 from files written in Making Better Mistakes' formats (fiveai/making-better-
mistakes@f0bb7d0a7c4a9c7c9517045a4be4446e9baf824f: data/*_isa.txt, *_splits.txt.xz, *_ilsvrc_distances.pkl.xz,
dataset_splits/): the padded tree equals MBM's distance, the distance check, both split formats, an end-to-end run."""
import lzma
import pickle

import numpy as np
import pytest

import stream_files as sf
from helpers import FAST, compose_cfg

from src.data.mbm import INat19DataModule, TieredImageNetDataModule, isa_tree
from src.data.superclasses import dataset_cases
from src.run.errors import DataMissingError
from src.data.tree import TreeError

LEAVES = ["c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8"]  # depths 4, 4, 4, 3, 3, 2, 3, 3: H = 4


@pytest.fixture(scope="module")
def mbm(tmp_path_factory):
    root = tmp_path_factory.mktemp("mbm")
    return sf.mbm(root / "data", root / "images")


def test_the_trees_lca_heights_are_mbms_distance(mbm):
    tree = isa_tree("t", mbm[0] / "tiered_imagenet_isa.txt")
    assert tree.class_names == tuple(LEAVES) and tree.level_names == ("depth3", "depth2", "depth1")
    reference = sf.mbm_reference_distances(sf.ISA)
    expected = np.array([[reference[tuple(sorted((a, b)))] for b in LEAVES] for a in LEAVES])
    assert np.array_equal(tree.lca_heights, expected)
    assert expected[0, 1] == 1 and expected[0, 3] == 3 and expected[3, 4] == 2 and expected[0, 5] == 4


def test_a_distance_file_of_another_tree_is_one_line(tmp_path):
    hierarchy, _ = sf.mbm(tmp_path / "data", tmp_path / "images", train=1, test=1)
    path = hierarchy / "tiered_imagenet_ilsvrc_distances.pkl.xz"
    with lzma.open(path, "rb") as f:
        distances = pickle.load(f)
    distances[("c1", "c4")] = 1
    with lzma.open(path, "wb") as f:
        pickle.dump(distances, f)
    dm = TieredImageNetDataModule(root=str(tmp_path / "images"), hierarchy_dir=str(hierarchy))
    with pytest.raises(TreeError) as error:
        dm.tree
    assert len(str(error.value).splitlines()) == 1 and "1 class pairs differ" in str(error.value)


def test_splits_come_from_mbms_listing_and_cases_are_the_depths(mbm):
    dm = TieredImageNetDataModule(root=str(mbm[1]), hierarchy_dir=str(mbm[0]))
    train, test = dm.samples("train"), dm.samples("test")
    assert (len(train), len(test)) == (8 * 6, 8 * 2)
    assert all(f"/train/{LEAVES[y]}/" in p for p, y in train) and all(f"/test/{LEAVES[y]}/" in p for p, y in test)
    assert set(dataset_cases("tiered_imagenet", dm.class_names, dm.tree)) == {"depth1", "depth2", "depth3"}
    assert dm.tree.table("depth1") == [0, 0, 0, 0, 0, 1, 1, 1]


def test_dataset_splits_lists_find_the_original_images(mbm, tmp_path):
    splits = tmp_path / "splits_tieredImageNet-H"
    for split in ("train", "test"):
        for leaf in LEAVES:
            names = sorted(p.name for p in (mbm[1] / split / leaf).iterdir())
            (splits / split).mkdir(parents=True, exist_ok=True)
            (splits / split / f"{leaf}.txt").write_text("\n".join(names) + "\n")
    listed = TieredImageNetDataModule(root=str(mbm[1]), hierarchy_dir=str(mbm[0]), splits_dir=str(splits))
    plain = TieredImageNetDataModule(root=str(mbm[1]), hierarchy_dir=str(mbm[0]))
    for split in ("train", "test"):
        assert sorted(listed.samples(split)) == sorted(plain.samples(split))


@pytest.mark.parametrize("dataset, prefix", [("tiered_imagenet", "tiered_imagenet"), ("inat19", "inaturalist19")])
@pytest.mark.parametrize("net", ["depth=10", "model=resnet18"])  # the CIFAR-style ResNet and torchvision's ImageNet one
def test_trains_end_to_end_and_is_scored_on_the_mbm_tree(tmp_path, net, dataset, prefix):
    from src.train import train

    hierarchy, images = sf.mbm(tmp_path / "data", tmp_path / "images", prefix=prefix)
    cfg = compose_cfg([*FAST, f"dataset={dataset}", f"dataset.root={images}", f"dataset.hierarchy_dir={hierarchy}",
                       "dataset.image_size=16", "dataset.num_workers=0", "dataset.batch_size=16", net,
                       "case=depth2"])
    (tmp_path / "run").mkdir()
    record = train(cfg, tmp_path / "run")
    assert record["status"] == "finished" and record["hierarchy_name"] == dataset
    assert list(record["level_acc"]) == ["class", "depth3", "depth2", "depth1"]
    assert record["superclasses"] == [0, 0, 0, 1, 1, 2, 3, 3]
    assert 0 <= record["mistake_severity"] <= 4


def test_missing_files_are_one_line_saying_where_to_put_them(tmp_path, mbm):
    for kwargs in ({}, {"root": str(tmp_path)}, {"root": str(tmp_path), "hierarchy_dir": str(tmp_path)},
                   {"root": str(tmp_path / "none"), "hierarchy_dir": str(mbm[0])}):
        with pytest.raises(DataMissingError) as error:
            TieredImageNetDataModule(**kwargs)
        assert len(str(error.value).splitlines()) == 1 and "making-better-mistakes" in str(error.value)
    empty = tmp_path / "images"
    empty.mkdir()
    with pytest.raises(DataMissingError) as error:
        TieredImageNetDataModule(root=str(empty), hierarchy_dir=str(mbm[0])).samples("train")
    assert len(str(error.value).splitlines()) == 1 and "48 train images" in str(error.value)
    with pytest.raises(DataMissingError):
        INat19DataModule(root=str(empty), hierarchy_dir=str(mbm[0]))  # no inaturalist19_isa.txt there


def test_the_mbm_presets_train_with_adam_amsgrad_at_a_constant_lr():
    import torch
    from hydra.utils import instantiate

    for preset in ("methods_tiered_imagenet", "methods_inat19"):
        cfg = compose_cfg([f"experiment={preset}"])
        optimizer = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))])
        assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["amsgrad"] is True
        assert optimizer.defaults["lr"] == cfg.lr_min == 1e-5 and cfg.dataset.batch_size == 256


class _Touch:
    """Unpickling it calls ``open(path, "a")``: a file from the web that creates a file (or runs anything)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "a")


@pytest.mark.parametrize("payload", ["value", "whole"])
def test_a_distance_file_that_would_run_code_leaves_no_file_and_is_one_line(tmp_path, payload):
    hierarchy, _ = sf.mbm(tmp_path / "data", tmp_path / "images", train=1, test=1)
    path = hierarchy / "tiered_imagenet_ilsvrc_distances.pkl.xz"
    touched = tmp_path / "touched"
    distances = sf.mbm_reference_distances(sf.ISA)
    if payload == "value":
        distances[("c1", "c2")] = _Touch(touched)
    with lzma.open(path, "wb") as f:
        pickle.dump(distances if payload == "value" else _Touch(touched), f)
    dm = TieredImageNetDataModule(root=str(tmp_path / "images"), hierarchy_dir=str(hierarchy))
    with pytest.raises(TreeError) as error:
        dm.tree
    assert not touched.exists()
    assert len(str(error.value).splitlines()) == 1 and "is not a plain distance file" in str(error.value)
    assert "it names io.open" in str(error.value)


def test_a_distance_file_of_other_plain_data_is_one_line(tmp_path):
    hierarchy, _ = sf.mbm(tmp_path / "data", tmp_path / "images", train=1, test=1)
    path = hierarchy / "tiered_imagenet_ilsvrc_distances.pkl.xz"
    with lzma.open(path, "wb") as f:
        pickle.dump([("c1", "c2", 1)], f)
    with pytest.raises(TreeError, match=r"not a dict of \(node, node\) -> int$"):
        TieredImageNetDataModule(root=str(tmp_path / "images"), hierarchy_dir=str(hierarchy)).tree
