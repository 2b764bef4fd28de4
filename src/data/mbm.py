"""tieredImageNet-H and iNaturalist-19 as Making Better Mistakes (Bertinetto et al., CVPR 2020) publishes them.

MBM's repository (fiveai/making-better-mistakes) ships, in ``data/``, for each data set ``<prefix>_isa.txt`` (one
``parent child`` pair of node ids a line), ``<prefix>_splits.txt.xz`` (an xz listing, ``./<split>/<class>/<file>``
a line, of the data set made from ILSVRC-12 / iNat-2019 images) and ``<prefix>_ilsvrc_distances.pkl.xz`` (an xz
pickle ``{(node, node): distance}``); in ``dataset_splits/`` a zip of ``<split>/<class>.txt`` lists of the original
image file names. Its licence (CC BY-NC-SA 4.0) keeps those files out of this project: the user gives the folder
that holds them (``dataset.hierarchy_dir``), and their images (``dataset.root``), and they are parsed here.

The class tree. MBM's distance of two classes is the height of their lowest common ancestor in the isa tree with
every leaf brought down to the depth of the deepest, H: ``d(a, b) = H - depth(LCA(a, b))`` (checked against
all 184,528 pairs of the published tieredImageNet-H file). Here that is a tree of H - 1 levels, named by depth
from the root (``depth1`` the coarsest ... ``depth{H-1}``), where class c's group at depth k is its ancestor
at depth k, or c itself where c is a leaf at depth <= k; so ``ClassTree.lca_heights`` equals MBM's distance, and
it is checked against the distance file when that is there. The levels are the cases: ``case=depth3``.

MBM trains on its ``train`` split (``ImageFolder`` over ``<root>/train``, classes in sorted order) and reports on
``test``; its ``val`` split selects the model. Here train and test are MBM's; validation is carved from train
(``val_size``), as for every data set.
"""
import lzma
import os
import pickle
from collections import defaultdict
from functools import cached_property
from pathlib import Path
from typing import Optional

from src.data.streaming import StreamingDataModule
from src.run.errors import DataMissingError
from src.data.tree import ClassTree, Level, TreeError

MBM = "the files of github.com/fiveai/making-better-mistakes"


def read_isa(path: Path) -> dict[str, str]:
    """child -> parent of an ``_isa.txt`` file; a node with two parents or a cycle is a one-line error."""
    parent: dict[str, str] = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise TreeError(f"{path}:{number}: expected 'parent child', got {line.strip()!r}")
            p, c = parts
            if parent.setdefault(c, p) != p:
                raise TreeError(f"{path}: node {c} has two parents, {parent[c]} and {p}")
    return parent


def ancestors(node: str, parent: dict[str, str], path: Path) -> list[str]:
    """[root, ..., node]."""
    chain = [node]
    while chain[-1] in parent:
        chain.append(parent[chain[-1]])
        if len(chain) > len(parent) + 1:
            raise TreeError(f"{path}: the isa relation has a cycle through {node}")
    return chain[::-1]


def isa_tree(name: str, isa: Path) -> ClassTree:
    """The padded tree of the module docstring: leaves (sorted) are the classes."""
    parent = read_isa(isa)
    children = set(parent.values())
    leaves = sorted(n for n in parent if n not in children)
    paths = [ancestors(leaf, parent, isa) for leaf in leaves]
    roots = {p[0] for p in paths}
    if len(roots) != 1:
        raise TreeError(f"{isa} has {len(roots)} roots ({sorted(roots)[:3]}...); a class tree has one")
    height = max(len(p) for p in paths) - 1  # H: the depth of the deepest leaf
    if height < 2:
        raise TreeError(f"{isa}: the tree needs a level between the root and the classes")
    levels = []
    for depth in range(height - 1, 0, -1):  # finest first
        keys: dict[str, int] = {}
        table = tuple(keys.setdefault(p[min(depth, len(p) - 1)], len(keys)) for p in paths)
        levels.append(Level(f"depth{depth}", table, tuple(keys)))
    return ClassTree(name, leaves, levels)


class PlainUnpickler(pickle.Unpickler):
    """Unpickles data only: no class or function is ever looked up, so a pickle that names one (``os.system``,
    ``builtins.eval``, any constructor) is refused before anything runs. MBM's distance files hold a dict of
    string pairs and ints, which pickle writes with opcodes of its own, without a single global."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"it names {module}.{name}, and only dicts, tuples, strings and numbers are read")


def read_distances(path: Path) -> dict[tuple[str, str], int]:
    """MBM's ``*_ilsvrc_distances.pkl.xz``: {(node, node): distance}, through ``PlainUnpickler``; anything
    else is one line (TreeError)."""
    try:
        with lzma.open(path, "rb") as f:
            distances = PlainUnpickler(f).load()
    except Exception as e:  # a damaged pickle raises about anything: UnpicklingError, EOFError, LZMAError, KeyError
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TreeError(f"{path} is not a plain distance file: {why}") from None
    plain = isinstance(distances, dict) and all(
        isinstance(k, tuple) and len(k) == 2 and all(isinstance(n, str) for n in k) and isinstance(d, int)
        and not isinstance(d, bool) for k, d in distances.items())
    if not plain:
        raise TreeError(f"{path} is not a plain distance file: not a dict of (node, node) -> int")
    return distances


def check_distances(tree: ClassTree, path: Path) -> None:
    """Every class pair's LCA height equals MBM's published distance (an xz pickle {(a, b): d})."""
    distances = read_distances(path)
    names, h = tree.class_names, tree.lca_heights
    wrong, missing = [], 0
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            b = names[j]
            d = distances.get((a, b), distances.get((b, a)))
            if d is None:
                missing += 1
            elif d != h[i, j]:
                wrong.append((a, b, d, int(h[i, j])))
    if missing or wrong:
        example = f"; e.g. {wrong[0][0]}, {wrong[0][1]}: {wrong[0][2]} there, {wrong[0][3]} here" if wrong else ""
        raise TreeError(f"{path}: {len(wrong)} class pairs differ from the tree's LCA heights and {missing} are "
                        f"missing{example}: the isa and distance files are not of the same data set")


class MBMDataModule(StreamingDataModule):
    """MBM's class set, splits and tree over the user's images (see the module docstring).

    ``root``: the images, either in MBM's layout ``<root>/<split>/<class>/<file>`` (as its ``_splits.txt.xz``
    lists them) or, with ``splits_dir`` (the unzipped ``dataset_splits/splits_*.zip``: ``<split>/<class>.txt``),
    the original images found by name in ``<root>/<split>/<class>/``, ``<root>/<class>/``, ``<root>/train/<class>/``,
    ``<root>/val/<class>/`` or ``<root>/val/``. ``hierarchy_dir``: the folder with MBM's ``data/`` files."""

    prefix = ""       # MBM's file prefix
    images = ""       # what the user's images are, for the missing-data line

    def __init__(self, *args, root: Optional[str] = None, hierarchy_dir: Optional[str] = None,
                 splits_dir: Optional[str] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        hint = (f"{self.name} needs dataset.hierarchy_dir=DIR (the data/ folder of {MBM}, holding "
                f"{self.prefix}_isa.txt and {self.prefix}_splits.txt.xz) and dataset.root=DIR ({self.images} in "
                f"MBM's <split>/<class>/<file> layout); docs/{self.name}.md")
        if root is None or hierarchy_dir is None:
            raise DataMissingError(hint)
        self.root, self.hierarchy_dir = Path(root).expanduser(), Path(hierarchy_dir).expanduser()
        self.splits_dir = None if splits_dir is None else Path(splits_dir).expanduser()
        self.isa = self.hierarchy_dir / f"{self.prefix}_isa.txt"
        self.listing = self.hierarchy_dir / f"{self.prefix}_splits.txt.xz"
        if not self.isa.is_file():
            raise DataMissingError(f"{self.name}: no {self.isa}; {hint}")
        if self.splits_dir is None and not self.listing.is_file():
            raise DataMissingError(f"{self.name}: no {self.listing}, and no dataset.splits_dir (the unzipped "
                                   f"dataset_splits/ of MBM); {hint}")
        if not self.root.is_dir():
            raise DataMissingError(f"{self.name}: dataset.root={self.root} is not a folder; {hint}")

    @cached_property
    def tree(self) -> ClassTree:
        tree = isa_tree(self.name, self.isa)
        distances = self.hierarchy_dir / f"{self.prefix}_ilsvrc_distances.pkl.xz"
        if distances.is_file():
            check_distances(tree, distances)
        return tree

    @cached_property
    def class_names(self) -> tuple[str, ...]:
        return self.tree.class_names

    @cached_property
    def _files(self) -> dict[str, list[tuple[str, str]]]:
        """{split: [(class, path)]} from MBM's listing or its per-class lists."""
        files = defaultdict(list)
        if self.splits_dir is None:
            with lzma.open(self.listing, "rt") as f:
                for line in f:
                    parts = line.strip().removeprefix("./").split("/")
                    if len(parts) == 3:
                        split, label, name = parts
                        files[split].append((label, str(self.root / split / label / name)))
        else:
            for split_dir in sorted(p for p in self.splits_dir.iterdir() if p.is_dir()):
                for listing in sorted(split_dir.glob("*.txt")):
                    names = [n.strip() for n in listing.read_text().splitlines() if n.strip()]
                    files[split_dir.name] += [(listing.stem, self._find(split_dir.name, listing.stem, n)) for n in names]
        return dict(files)

    def _find(self, split: str, label: str, name: str) -> str:
        candidates = [self.root / split / label / name, self.root / label / name, self.root / "train" / label / name,
                      self.root / "val" / label / name, self.root / "val" / name]
        for path in candidates:
            if path.is_file():
                return str(path)
        raise DataMissingError(f"{self.name}: image {name} of class {label} ({split} split) is in none of "
                               f"{self.root}/{{{split},train,val}}/{label}/ or {self.root}/val/; "
                               f"dataset.root must hold {self.images}")

    def samples(self, split: str) -> list[tuple[str, int]]:
        files = self._files.get(split)
        if not files:
            raise DataMissingError(f"{self.name}: MBM's split lists have no {split} split (they have "
                                   f"{sorted(self._files)})")
        index = {c: i for i, c in enumerate(self.class_names)}
        unknown = sorted({label for label, _ in files} - set(index))
        if unknown:
            raise DataMissingError(f"{self.name}: the {split} split has classes {unknown[:3]} that are not leaves "
                                   f"of {self.isa}")
        absent = [path for _, path in files if not os.path.isfile(path)]
        if absent:
            raise DataMissingError(f"{self.name}: {len(absent)} of the {len(files)} {split} images MBM lists are "
                                   f"not in dataset.root={self.root} (first: {absent[0]})")
        return [(path, index[label]) for label, path in files]


class TieredImageNetDataModule(MBMDataModule):
    """tieredImageNet-H: 608 ILSVRC-12 classes, MBM's WordNet tree (leaves at depths 3 to 12: 11 levels here)."""
    name = "tiered_imagenet"
    prefix = "tiered_imagenet"
    images = "tieredImageNet-H made from your ILSVRC-12 images"


class INat19DataModule(MBMDataModule):
    """iNaturalist-19 as MBM uses it: 1,010 species, a 7-level taxonomy (6 levels between root and species)."""
    name = "inat19"
    prefix = "inaturalist19"
    images = "iNaturalist-19 made from your iNat-2019 images"

