"""The field's benchmarks on the streaming path: iNaturalist 2021 (mini) and FGVC-Aircraft through torchvision's
dataset classes, in their official on-disk layouts. MBM's tieredImageNet-H and iNaturalist-19 are in ``src.data.mbm``.

Each data set's class tree is its own (a level per rank), so its levels are its cases, as CIFAR-100's are.
Offline and missing, each stops with one line saying where to put which files.
"""
import os
from functools import cached_property
from pathlib import Path

from torchvision.datasets import INaturalist, FGVCAircraft

from src.data.streaming import StreamingDataModule
from src.run.errors import DataMissingError
from src.data.tree import ClassTree, Level, TreeError

INAT21_RANKS = ("kingdom", "phylum", "class", "order", "family", "genus")  # coarsest first, in the folder names


def open_torchvision(dataset: str, cls, root: Path, where: str, download: bool, **kwargs):
    """``cls(root, download=download, **kwargs)``; missing or undownloadable -> one line saying what goes where."""
    try:
        return cls(root=str(root), download=download, **kwargs)
    except Exception as e:  # RuntimeError (not found), URLError/OSError (offline), tarfile errors
        reason = " ".join(str(e).split()) or type(e).__name__
        how = f"; the download failed ({reason})" if download else " (dataset.download=false)"
        raise DataMissingError(f"{dataset} not found in {Path(root).resolve()}: put {where} there, or set "
                               f"HAL_DATA_DIR to a folder that has them{how}") from None


def level_tree(name: str, class_names, paths, level_names) -> ClassTree:
    """A tree from each class's path of ancestors, coarsest first (``paths[c][i]`` names its group at rank i).
    A group is the whole prefix of its path, so two genera of the same name in different families stay apart."""
    levels = []
    for depth in range(len(level_names), 0, -1):  # finest level first
        keys, table = {}, []
        for path in paths:
            table.append(keys.setdefault(tuple(path[:depth]), len(keys)))
        levels.append(Level(level_names[depth - 1], tuple(table), tuple(k[-1] for k in keys)))
    return ClassTree(name, class_names, levels)


class INat21MiniDataModule(StreamingDataModule):
    """iNaturalist 2021: ``2021_train_mini`` (500,000 images, 50 per species) for training, ``2021_valid``
    (100,000) for testing, 10,000 species, in torchvision's ``INaturalist`` layout: ``data_dir/2021_train_mini/
    <id>_<kingdom>_<phylum>_<class>_<order>_<family>_<genus>_<species>/*.jpg``. The 7-level taxonomy of the
    folder names is the class tree (kingdom ... genus above the species; cases ``case=kingdom`` ... ``genus``).

    The tree level of the rank *class* is named ``taxonomic_class`` (``class`` names the leaves in the metrics);
    its case is still ``case=class`` (``tree.case_names``). ``version=2021_train`` trains on the full 2.7 M images.
    """

    name = "inat21_mini"

    def __init__(self, *args, version: str = "2021_train_mini", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if version not in ("2021_train_mini", "2021_train"):
            raise DataMissingError(f"dataset.version must be 2021_train_mini or 2021_train, got {version}")
        self.version = version

    def _open(self, version: str) -> INaturalist:
        where = (f"torchvision's INaturalist folders {self.version}/ and 2021_valid/ (the extracted {self.version}.tar.gz "
                 f"and 2021_valid.tar.gz of github.com/visipedia/inat_comp/tree/master/2021)")
        return open_torchvision(self.name, INaturalist, Path(self.data_dir), where, self.download, version=version)

    @cached_property
    def _opened(self) -> dict:
        return {"train": self._open(self.version), "test": self._open("2021_valid")}

    @cached_property
    def class_names(self) -> tuple[str, ...]:
        train, test = (self._opened[s].all_categories for s in ("train", "test"))
        if train != test:
            extra = sorted(set(train) ^ set(test))[:3]
            raise DataMissingError(f"{self.name}: {self.version}/ and 2021_valid/ have different species folders "
                                   f"(e.g. {extra}); use the official archives")
        return tuple(train)

    @cached_property
    def tree(self) -> ClassTree:
        paths = []
        for folder in self.class_names:
            parts = folder.split("_")
            if len(parts) != 8:
                raise TreeError(f"{self.name}: species folder {folder!r} is not <id>_<kingdom>_..._<genus>_<species>")
            paths.append(parts[1:7])
        names = tuple("taxonomic_class" if r == "class" else r for r in INAT21_RANKS)
        tree = level_tree(self.name, self.class_names, paths, names)
        tree.case_names = {"taxonomic_class": "class"}
        return tree

    def samples(self, split: str) -> list[tuple[str, int]]:
        ds = self._opened[split]
        return [(os.path.join(ds.root, ds.all_categories[c], f), c) for c, f in sorted(ds.index)]


class AircraftDataModule(StreamingDataModule):
    """FGVC-Aircraft 2013b in torchvision's ``FGVCAircraft`` layout (``data_dir/fgvc-aircraft-2013b/data/``):
    ``trainval`` (6,667 images) for training, ``test`` (3,333) for testing, 100 variants. The tree (variant ->
    70 families -> 30 manufacturers) comes from the per-image labels at the three annotation levels, of both
    splits; cases ``case=family`` and ``case=manufacturer``."""

    name = "aircraft"
    LEVELS = ("family", "manufacturer")

    def _open(self, split: str, level: str) -> FGVCAircraft:
        where = ("torchvision's FGVCAircraft folder fgvc-aircraft-2013b/ (the extracted fgvc-aircraft-2013b.tar.gz "
                 "of www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/)")
        return open_torchvision(self.name, FGVCAircraft, Path(self.data_dir), where, self.download, split=split,
                                annotation_level=level)

    @cached_property
    def _opened(self) -> dict:
        return {(split, level): self._open(split, level) for split in ("trainval", "test")
                for level in ("variant", *self.LEVELS)}

    @cached_property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self._opened["trainval", "variant"].classes)

    @cached_property
    def tree(self) -> ClassTree:
        groups = {}  # variant -> (manufacturer, family): coarsest first
        for split in ("trainval", "test"):
            label = {level: dict(zip(self._opened[split, level]._image_files, self._opened[split, level]._labels))
                     for level in ("variant", *self.LEVELS)}
            for image, variant in label["variant"].items():
                if any(image not in label[level] for level in self.LEVELS):
                    raise DataMissingError(f"{self.name}: image {Path(image).stem} of the {split} variant labels "
                                           f"has no family or manufacturer label; use the official files")
                path = tuple(self._opened[split, level].classes[label[level][image]] for level in self.LEVELS[::-1])
                if groups.setdefault(variant, path) != path:
                    raise TreeError(f"{self.name}: variant {self.class_names[variant]} is labelled both "
                                    f"{groups[variant]} and {path} (manufacturer, family)")
        missing = [self.class_names[v] for v in range(len(self.class_names)) if v not in groups]
        if missing:
            raise DataMissingError(f"{self.name}: variants {missing[:3]} have no image; use the official files")
        return level_tree(self.name, self.class_names, [groups[v] for v in range(len(self.class_names))],
                          self.LEVELS[::-1])

    def samples(self, split: str) -> list[tuple[str, int]]:
        ds = self._opened["trainval" if split == "train" else "test", "variant"]
        return list(zip(ds._image_files, ds._labels))
