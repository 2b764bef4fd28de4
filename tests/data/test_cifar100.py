"""dataset=cifar100 on small files in the official pickle format (torchvision's CIFAR100 layout)."""
import pickle
from pathlib import Path

import numpy as np
import pytest

from helpers import HandScore, hand_mistakes
from src.data.datasets import CIFAR100DataModule
from src.data.superclasses import cifar100_tree
from src.run.errors import DataMissingError

FINE = [f"fine{i:02d}" for i in range(100)]
COARSE = [f"coarse{i:02d}" for i in range(20)]


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 100, wrong_coarse: bool = False) -> dict:
    """``cifar-100-python/{train,test,meta}``: rows of 3072 bytes, fine_labels, coarse_labels, the names."""
    coarse_of = cifar100_tree(FINE).table("coarse")
    rng, out, folder = np.random.default_rng(0), {}, root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [i % 100 for i in range(n)]
        coarse = [coarse_of[f] for f in fine]
        if wrong_coarse and name == "test":
            coarse[7] = (coarse[7] + 1) % 20  # class 7 put in another superclass
        with open(folder / name, "wb") as f:
            pickle.dump({"filenames": [f"{i}.png" for i in range(n)], "batch_label": name, "fine_labels": fine,
                         "coarse_labels": coarse, "data": data}, f)
        out[name] = (data, fine)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": FINE, "coarse_label_names": COARSE}, f)
    return out


def datamodule(root: Path) -> CIFAR100DataModule:
    return CIFAR100DataModule(data_dir=str(root), download=False, verify_checksums=False)


def test_cifar100_reads_the_official_pickles_and_names_from_meta(tmp_path):
    files = write_cifar100(tmp_path)
    dm = datamodule(tmp_path)
    assert dm.class_names == tuple(FINE)
    assert dm.tree.level("coarse").group_names == tuple(COARSE)
    data = dm.load()
    images, labels = data["test"]
    assert images.shape == (100, 3, 32, 32) and labels.tolist() == files["test"][1]
    # the first row's first 1024 bytes are its red plane
    assert images[0, 0].flatten().tolist() == files["test"][0][0, :1024].tolist()


def test_coarse_labels_that_disagree_with_the_tree_are_one_line(tmp_path):
    write_cifar100(tmp_path, wrong_coarse=True)
    with pytest.raises(DataMissingError, match=r"coarse_labels of test disagree .* for classes \[7\]") as e:
        datamodule(tmp_path).load()
    assert "\n" not in str(e.value)


def test_missing_cifar100_offline_is_one_line(tmp_path):
    with pytest.raises(DataMissingError, match=r"cifar100 not found .* \(dataset.download=false\)") as e:
        datamodule(tmp_path).class_names
    assert "\n" not in str(e.value)


def test_train_on_cifar100_coarse_scores_the_whole_tree(run_train, tmp_path):
    write_cifar100(tmp_path / "data")
    scored = HandScore()
    record = run_train("dataset=cifar100", f"dataset.data_dir={tmp_path / 'data'}", "dataset.download=false",
                       "dataset.verify_checksums=false", "dataset.val_size=100", "case=coarse", "depth=10",
                       "trainer.fast_dev_run=true", callbacks=[scored])
    assert record["status"] == "finished" and record["hierarchy_name"] == "cifar100"
    assert max(record["superclasses"]) == 19
    assert set(record["level_acc"]) == {"class", "coarse", "level3", "level2", "level1"}
    assert set(record["hierarchical_distance"]) == set(record["hierarchical_distance_crm"]) == {"1", "5", "20"}
    # Rescored by hand (helpers.hand_mistakes) on the five-level tree from the inferred scores of the final weights.
    levels = [level.table for level in scored.tree.levels]
    assert len(levels) == 4  # coarse, level3, level2, level1 under the root: heights 0..5
    hand = hand_mistakes(scored.scores["scores_inferred"], scored.scores["label"], levels)
    for key in ("mistake_severity", "ece", "test_error_crm", "mistake_severity_crm"):
        assert record[key] == pytest.approx(hand[key], abs=1e-5), key
    assert record["hierarchical_distance"] == pytest.approx(hand["hierarchical_distance"], abs=1e-9)
    assert record["hierarchical_distance_crm"] == pytest.approx(hand["hierarchical_distance_crm"], abs=1e-9)


@pytest.mark.parametrize("preset, key, values", [
    ("table2_cifar100", "case", "baseline,coarse,level3,level2,level1"),
    ("methods_cifar100", "arm", "baseline,dks,hal_coarse,hal_level3,hal_level2,hal_level1,hal_dks_coarse,"
                                "heads_coarse,hal_heads_coarse,proxydr,hxe_coarse,hal_hxe_coarse,soft_labels_coarse,"
                                "hal_soft_labels_coarse,haframe_coarse,hal_coarse_random,hal_dks_coarse_random,"
                                "heads_coarse_random,hal_heads_coarse_random,hxe_coarse_random,hal_hxe_coarse_random,"
                                "soft_labels_coarse_random,hal_soft_labels_coarse_random,haframe_coarse_random")])
def test_cifar100_presets_use_the_cifar10_recipe(preset, key, values):
    from hydra import compose, initialize_config_dir

    from helpers import CONF

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={preset}"], return_hydra_config=True)
        cifar10 = compose(config_name="config", overrides=[f"experiment={preset.replace('100', '10')}"])
    assert cfg.dataset.name == "cifar100" and cfg.depth == cifar10.depth == 28
    assert cfg.trainer.max_epochs == cifar10.trainer.max_epochs and cfg.dataset.val_size == 0
    assert cfg.optimizer == cifar10.optimizer
    assert cfg.hydra.sweeper.params[key] == values and cfg.hydra.sweep.dir == f"outputs/sweeps/{preset}"
    for arm in values.split(","):
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            composed = compose(config_name="config", overrides=["dataset=cifar100", f"{key}={arm}"])
        # a random-tree arm permutes the coarse tree (case.of): still a CIFAR-100 case
        assert composed.case.get("of", composed.case.name) in ("baseline", "coarse", "level3", "level2", "level1")
