"""MNIST (real, when ../shared/data has it), SVHN and CIFAR-10 (small files in the official formats),
missing data, the empty validation split and GPU-resident splits."""
import json
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from urllib.error import URLError

import numpy as np
import pytest
import scipy.io
import torch

from helpers import SHARED_MNIST, HandScore
from src.data.datasets import CIFAR10DataModule, DigitsDataModule, MNISTDataModule, SVHNDataModule
from src.data.datamodule import DataConfigError
from src.data.superclasses import dataset_cases, resolve_case
from src.run.errors import DataMissingError

ROOT = Path(__file__).resolve().parents[2]

# Table 1, written independently of src/data/superclasses.py: digit -> superclass.
DIGIT_CASES = {
    "case1": lambda d: 0 if d >= 5 else 1,
    "case2": lambda d: 0 if d % 2 else 1,
    "case3": lambda d: 0 if d in (2, 3, 5, 7) else 1,
    "case4": lambda d: 0 if d in (0, 6, 8, 9) else 1 if d in (2, 3, 5) else 2,
}
CIFAR10_CASE4 = {"automobile": 0, "truck": 0, "cat": 1, "dog": 1, "deer": 2, "horse": 2, "airplane": 3,
                 "ship": 3, "bird": 4, "frog": 4}


def write_svhn(root: Path, sizes=(("train", 30), ("test", 20))) -> dict:
    """Official SVHN .mat files: X (32, 32, 3, N) uint8, y (N, 1) with 10 for the digit 0."""
    rng, out = np.random.default_rng(0), {}
    (root / "SVHN").mkdir(parents=True, exist_ok=True)
    for split, n in sizes:
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)  # 1..10
        scipy.io.savemat(root / "SVHN" / f"{split}_32x32.mat", {"X": x, "y": y})
        out[split] = (x, y)
    return out


def write_cifar10(root: Path, per_batch: int = 6, n_test: int = 8) -> dict:
    """Official CIFAR-10 python pickles: rows of 3072 bytes (R, G, B planes), labels, batches.meta."""
    rng, out, folder = np.random.default_rng(0), {}, root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels}, f)
        out[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR10DataModule.class_names), "num_vis": 3072}, f)
    return out


def one_line(error: Exception) -> str:
    message = str(error)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def mnist():
    if not (SHARED_MNIST / "MNIST" / "raw").is_dir():
        pytest.skip(f"real MNIST not found in {SHARED_MNIST}/MNIST/raw")
    return MNISTDataModule(data_dir=str(SHARED_MNIST), download=False, val_size=0).load()


def test_real_mnist_sizes_and_class_counts(mnist):
    (train_x, train_y), (test_x, test_y) = mnist["train"], mnist["test"]
    assert train_x.shape == (60000, 1, 28, 28) and test_x.shape == (10000, 1, 28, 28)
    assert train_x.dtype == torch.uint8 and train_y.dtype == torch.int64
    assert torch.bincount(train_y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert train_x.float().mean() / 255 == pytest.approx(0.1307, abs=1e-4)  # the config's mean


@pytest.mark.parametrize("case", sorted(DIGIT_CASES))
def test_real_mnist_superclass_of_every_sample_matches_table1(mnist, case):
    dm = MNISTDataModule(val_size=0)
    dm.load = lambda: mnist
    dm.superclasses = resolve_case({"name": case}, dataset_cases("mnist", dm.class_names), dm.class_names).table
    dm.setup()
    for split, n in (("train", 60000), ("test", 10000)):
        _, superclass, label = dm.splits[split]
        expected = torch.tensor([DIGIT_CASES[case](d) for d in range(10)])[label]
        assert len(label) == n and torch.equal(superclass, expected)


def test_val_split_is_carved_from_train_independently_of_the_run_seed(mnist):
    splits = []
    for run_seed in (0, 1):
        torch.manual_seed(run_seed)
        dm = MNISTDataModule(val_size=5000, split_seed=0)
        dm.load = lambda: mnist
        dm.setup()
        splits.append(dm.splits)
    assert torch.equal(splits[0]["val"][2], splits[1]["val"][2])
    assert len(splits[0]["train"][2]) == 55000 and len(splits[0]["val"][2]) == 5000
    assert torch.equal(splits[0]["test"][0], mnist["test"][0])  # test is never split


def test_svhn_reads_the_official_mat_format(tmp_path):
    files = write_svhn(tmp_path)
    dm = SVHNDataModule(data_dir=str(tmp_path), download=False, verify_checksums=False, val_size=0)
    data = dm.load()
    for split in ("train", "test"):
        x, y = files[split]
        images, labels = data[split]
        assert images.shape == (x.shape[3], 3, 32, 32) and images.dtype == torch.uint8
        assert torch.equal(images[3], torch.from_numpy(x[:, :, :, 3]).permute(2, 0, 1))  # HWC -> CHW
        assert labels.tolist() == [int(v) % 10 for v in y[:, 0]]  # 10 means the digit 0
    assert 0 in data["train"][1].tolist() and 10 not in data["train"][1].tolist()


def test_svhn_extra_is_added_to_train_only_when_asked(tmp_path):
    write_svhn(tmp_path, sizes=(("train", 30), ("test", 20), ("extra", 15)))
    kwargs = dict(data_dir=str(tmp_path), download=False, verify_checksums=False)
    assert len(SVHNDataModule(**kwargs).load()["train"][1]) == 30
    data = SVHNDataModule(**kwargs, use_extra=True).load()
    assert len(data["train"][1]) == 45 and len(data["test"][1]) == 20


def test_cifar10_reads_the_official_pickles(tmp_path):
    files = write_cifar10(tmp_path)
    data = CIFAR10DataModule(data_dir=str(tmp_path), download=False, verify_checksums=False).load()
    images, labels = data["train"]
    assert images.shape == (30, 3, 32, 32) and images.dtype == torch.uint8
    row, label = files["data_batch_2"][0][1], files["data_batch_2"][1][1]
    assert torch.equal(images[7], torch.from_numpy(row).view(3, 32, 32)) and labels[7] == label
    assert data["test"][1].tolist() == files["test_batch"][1]


def test_cifar10_case4_groups_the_named_classes():
    table = dataset_cases("cifar10", CIFAR10DataModule.class_names)["case4"].table
    assert {name: table[i] for i, name in enumerate(CIFAR10DataModule.class_names)} == CIFAR10_CASE4


@pytest.mark.parametrize("cls, write", [(SVHNDataModule, write_svhn), (CIFAR10DataModule, write_cifar10)])
def test_md5_is_checked_unless_explicitly_relaxed(tmp_path, cls, write):
    write(tmp_path)
    with pytest.raises(DataMissingError) as e:
        cls(data_dir=str(tmp_path), download=False).load()
    assert "md5" in one_line(e.value) and "dataset.verify_checksums=false" in str(e.value)
    assert len(cls(data_dir=str(tmp_path), download=False, verify_checksums=False).load()["test"][1]) > 0


@pytest.mark.parametrize("cls, looked_for", [
    (MNISTDataModule, "MNIST/raw/train-images-idx3-ubyte"), (SVHNDataModule, "train_32x32.mat"),
    (CIFAR10DataModule, "cifar-10-batches-py/data_batch_1")])
def test_missing_data_offline_is_one_line_naming_dataset_path_and_fix(tmp_path, cls, looked_for):
    with pytest.raises(DataMissingError) as e:
        cls(data_dir=str(tmp_path), download=False).setup()
    message = one_line(e.value)
    assert message.startswith(f"{cls.name} not found in {tmp_path}")
    assert looked_for in message and "HAL_DATA_DIR" in message and "dataset.download=true" in message


def test_a_failed_download_says_so(tmp_path, monkeypatch):
    from torchvision.datasets import SVHN

    def offline(self):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(SVHN, "download", offline)
    with pytest.raises(DataMissingError) as e:
        SVHNDataModule(data_dir=str(tmp_path), download=True).load()
    assert "the download failed" in one_line(e.value) and "Name or service not known" in str(e.value)


def test_unreadable_files_are_reported(tmp_path):
    write_svhn(tmp_path)
    (tmp_path / "SVHN" / "test_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataMissingError, match="cannot read the dataset files"):
        SVHNDataModule(data_dir=str(tmp_path), download=False, verify_checksums=False).load()


def test_cli_missing_data_exits_1_with_one_error_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "src.train", "dataset=svhn", "case=case4", f"dataset.data_dir={empty}",
         "dataset.download=false", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: svhn not found in {empty}")
    assert "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "failed"


def test_val_size_zero_trains_without_validation_and_records_null(tmp_path, run_train):
    write_svhn(tmp_path / "data", sizes=(("train", 40), ("test", 20)))
    scored = HandScore()
    record = run_train("dataset=svhn", "case=case2", f"dataset.data_dir={tmp_path / 'data'}",
                       "dataset.download=false", "dataset.verify_checksums=false", "dataset.val_size=0",
                       "model.depth=10", "trainer.max_epochs=2", callbacks=[scored])
    assert record["status"] == "finished" and record["val_error"] is None
    assert record["superclasses"] == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    assert record["test_error"] == pytest.approx(scored.scores["test_error"], abs=1e-4)
    assert len(scored.scores["label"]) == 20  # the whole test file, nothing held out of it


@pytest.mark.parametrize("val_size", [40, 1.5, -1])
def test_bad_val_size_is_a_user_error(val_size):
    with pytest.raises(DataConfigError, match="dataset.val_size"):
        dm = DigitsDataModule(val_size=val_size)
        dm.load = lambda: {"train": (torch.zeros(40, 1, 2, 2, dtype=torch.uint8), torch.zeros(40).long()),
                           "test": (torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.zeros(4).long())}
        dm.setup()


def _root_device_trainer(device: str):
    return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)), training=False)


@pytest.mark.parametrize("on_device", [True, False])
def test_splits_move_to_the_trainers_root_device_once(on_device):
    # "meta" stands in for a GPU: the move is the same call, and it needs no GPU.
    dm = DigitsDataModule(on_device=on_device)
    dm.setup()
    assert all(t.device.type == "cpu" for split in dm.splits.values() for t in split)
    dm.trainer = _root_device_trainer("meta")
    dm.setup("fit")
    expected = "meta" if on_device else "cpu"
    assert all(t.device.type == expected for split in dm.splits.values() for t in split)


def test_splits_stay_on_a_cpu_trainer_and_batches_are_normalised_there():
    import pytorch_lightning as pl

    dm = DigitsDataModule()
    dm.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    dm.setup("fit")
    assert all(t.device == dm.trainer.strategy.root_device for split in dm.splits.values() for t in split)
    images, superclass, label = dm.on_after_batch_transfer(next(iter(dm.test_dataloader())), 0)
    assert images.dtype == torch.float32 and images.shape[1:] == (1, 8, 8)
    raw = dm.splits["test"][0][:len(images)]
    torch.testing.assert_close(images, (raw.float() / 255 - dm.mean.view(1, -1, 1, 1)) / dm.std.view(1, -1, 1, 1))


@pytest.mark.slow  # the end-of-run passes read all 60,000 training images: ~1-2 min on 2 cores
def test_a_short_real_mnist_run_learns_and_scores_the_whole_test_set(run_train):
    """Real MNIST end to end: 150 steps of HAL (case1) on the 60,000 training images, tested on all 10,000."""
    if not (SHARED_MNIST / "MNIST" / "raw").is_dir():
        pytest.skip(f"real MNIST not found in {SHARED_MNIST}/MNIST/raw")
    scored = HandScore()
    record = run_train("dataset=mnist", f"dataset.data_dir={SHARED_MNIST}", "dataset.download=false",
                       "+trainer.limit_train_batches=150", "+trainer.limit_val_batches=2", callbacks=[scored])
    assert record["status"] == "finished" and len(scored.scores["label"]) == 10000
    assert record["test_error"] == pytest.approx(scored.scores["test_error"], abs=1e-4)
    assert record["test_error"] < 20  # chance is 90 %: the network has learned the digits
