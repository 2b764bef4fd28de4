"""Concrete datasets: each loads uint8 (N, C, H, W) images and int64 labels.

MNIST, SVHN, CIFAR-10 and CIFAR-100 are read (and, with ``download=True``, fetched) by torchvision's dataset
classes, in their official file formats; a missing dataset stops with a one-line ``DataMissingError``.
"""
import pickle
from functools import cached_property
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100, MNIST, SVHN
from torchvision.datasets.utils import check_integrity

from src.data.datamodule import InMemoryDataModule
from src.data.superclasses import cifar100_tree
from src.run.errors import DataMissingError
from src.data.tree import ClassTree


class DigitsDataModule(InMemoryDataModule):
    """scikit-learn's 1,797 real 8×8 handwritten digits, bundled with the package (offline default).

    The train/test split is fixed (20 % test, stratified, ``random_state=0``) and does not depend on
    the run seed; validation is carved from train by the base class.
    """

    name = "digits"
    class_names = tuple(str(d) for d in range(10))

    def load(self):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = torch.from_numpy(digits.images * (255 / 16)).round().to(torch.uint8)[:, None]  # 0..16 -> 0..255
        labels = torch.from_numpy(digits.target).long()
        train_idx, test_idx = train_test_split(
            torch.arange(len(labels)).numpy(), test_size=0.2, stratify=labels.numpy(), random_state=0)
        return {"train": (images[train_idx], labels[train_idx]), "test": (images[test_idx], labels[test_idx])}


def _open_torchvision(dataset: str, cls, root: Path, md5s: dict[str, Optional[str]], download: bool, **kwargs):
    """``cls(root, download=download, **kwargs)``; a missing, undownloadable or corrupt dataset -> one-line error.

    ``md5s`` maps the files the dataset needs (relative to ``root``) to the md5 torchvision checks when
    loading (None where it checks none), for the message.
    """
    try:
        return cls(root=str(root), download=download, **kwargs)
    except Exception as e:  # torchvision raises RuntimeError, urllib URLError/OSError, scipy/pickle errors
        reason = " ".join(str(e).split()) or type(e).__name__
        missing = [f for f in md5s if not (root / f).is_file()]
        if missing:
            how = f" and the download failed ({reason})" if download else " (dataset.download=false)"
            raise DataMissingError(
                f"{dataset} not found in {root.resolve()}: no {', '.join(missing)}{how}; copy the files there, "
                f"or set HAL_DATA_DIR to a folder that has them"
                f"{'' if download else ', or set dataset.download=true when online'}") from None
        corrupt = [f for f, md5 in md5s.items() if md5 is not None and not check_integrity(root / f, md5)]
        if corrupt:
            raise DataMissingError(
                f"{dataset}: {', '.join(corrupt)} in {root.resolve()} fail torchvision's md5 check (corrupted, "
                f"or not the official files); replace them, or set dataset.verify_checksums=false to use them as they are") from None
        raise DataMissingError(f"{dataset}: cannot read the dataset files in {root.resolve()} ({reason}); "
                               f"replace them with the official ones") from None


class MNISTDataModule(InMemoryDataModule):
    """MNIST, 60,000 train / 10,000 test 28×28 grey digits, from ``data_dir/MNIST/raw/`` (torchvision layout)."""

    name = "mnist"
    class_names = tuple(str(d) for d in range(10))

    def load(self):
        # torchvision checks MNIST's md5 only when downloading, so there is nothing to relax here.
        files = {f"MNIST/raw/{stem}-{kind}-idx{dim}-ubyte": None for stem in ("train", "t10k")
                 for kind, dim in (("images", 3), ("labels", 1))}
        out = {}
        for split in ("train", "test"):
            ds = _open_torchvision("mnist", MNIST, Path(self.data_dir), files, self.download, train=split == "train")
            out[split] = (ds.data[:, None].contiguous(), ds.targets.long())
        return out


class SVHNDataModule(InMemoryDataModule):
    """SVHN core set as in the paper: 73,257 train / 26,032 test 32×32 colour digits, from ``data_dir/SVHN/``.

    The ``.mat`` files label digit 0 as 10; torchvision maps it to 0. ``use_extra`` adds the 531,131
    "extra" images to train (not in the paper). ``verify_checksums=False`` skips torchvision's md5
    check of files that are there (for your own or test files in the official format).
    """

    name = "svhn"
    class_names = tuple(str(d) for d in range(10))

    def __init__(self, *args, use_extra: bool = False, verify_checksums: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.use_extra, self.verify_checksums = use_extra, verify_checksums

    def load(self):
        cls = SVHN
        if not self.verify_checksums:
            cls = type("SVHNUnchecked", (SVHN,), {
                "split_list": {k: [url, f, None] for k, (url, f, _) in SVHN.split_list.items()}})
        root = Path(self.data_dir) / "SVHN"
        splits = {"train": ["train"] + (["extra"] if self.use_extra else []), "test": ["test"]}
        out = {}
        for split, parts in splits.items():
            xs, ys = [], []
            for part in parts:
                _, filename, md5 = cls.split_list[part]
                ds = _open_torchvision("svhn", cls, root, {filename: md5}, self.download, split=part)
                xs.append(torch.from_numpy(ds.data))
                ys.append(torch.from_numpy(ds.labels))
            out[split] = (torch.cat(xs).contiguous(), torch.cat(ys).long())
        return out


class CIFAR10DataModule(InMemoryDataModule):
    """CIFAR-10, 50,000 train / 10,000 test 32×32 colour images, from ``data_dir/cifar-10-batches-py/``.

    ``verify_checksums=False`` skips torchvision's md5 check of files that are there.
    """

    name = "cifar10"
    class_names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    torchvision_class = CIFAR10

    def __init__(self, *args, verify_checksums: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.verify_checksums = verify_checksums

    @cached_property
    def _opened(self) -> dict:
        """{split: the torchvision dataset}, opened (and downloaded) once."""
        cls = self.torchvision_class
        if not self.verify_checksums:
            cls = type(f"{cls.__name__}Unchecked", (cls,), {
                "tgz_md5": None,
                "train_list": [[f, None] for f, _ in cls.train_list],
                "test_list": [[f, None] for f, _ in cls.test_list],
                "meta": {**cls.meta, "md5": None}})
        root = Path(self.data_dir)
        files = {f"{cls.base_folder}/{f}": md5 for f, md5 in
                 cls.train_list + cls.test_list + [[cls.meta["filename"], cls.meta["md5"]]]}
        return {split: _open_torchvision(self.name, cls, root, files, self.download, train=split == "train")
                for split in ("train", "test")}

    def load(self):
        out, opened = {}, self._opened
        del self._opened  # torchvision's arrays are copied below: keep one copy in memory
        for split, ds in opened.items():
            if tuple(ds.classes) != tuple(self.class_names):
                raise DataMissingError(f"{self.name}: {Path(self.data_dir).resolve()} names its classes {ds.classes}, "
                                       f"not {list(self.class_names)}")
            out[split] = (torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(),
                          torch.tensor(ds.targets, dtype=torch.long))
        return out


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100, 50,000 train / 10,000 test 32×32 colour images of 100 classes, from ``data_dir/cifar-100-python/``.

    Class names come from the ``meta`` pickle (``fine_label_names``), as torchvision reads them. torchvision keeps
    only the fine labels, so the 20 superclasses are read from the pickles' ``coarse_labels`` (names:
    ``coarse_label_names``) and must equal the coarse level of the shipped five-level tree (``self.tree``).
    """

    name = "cifar100"
    torchvision_class = CIFAR100

    @cached_property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self._opened["train"].classes)

    def _pickle(self, filename: str) -> dict:
        with open(Path(self.data_dir) / self.torchvision_class.base_folder / filename, "rb") as f:
            return pickle.load(f, encoding="latin1")

    @cached_property
    def tree(self) -> ClassTree:
        return cifar100_tree(self.class_names, self._pickle(self.torchvision_class.meta["filename"]).get(
            "coarse_label_names"))

    def load(self):
        out = super().load()
        coarse = np.asarray(self.tree.table("coarse"))
        for split, files in (("train", self.torchvision_class.train_list), ("test", self.torchvision_class.test_list)):
            filename = files[0][0]
            labels = np.asarray(self._pickle(filename).get("coarse_labels", []))
            fine = out[split][1].numpy()
            if len(labels) != len(fine) or (labels != coarse[fine]).any():
                wrong = sorted(set(fine[labels != coarse[fine]].tolist())) if len(labels) == len(fine) else "all"
                raise DataMissingError(
                    f"cifar100: the coarse_labels of {filename} disagree with the coarse level of the shipped tree "
                    f"(src/data/cifar100_levels.csv) for classes {wrong}: not the official CIFAR-100 files")
        return out
