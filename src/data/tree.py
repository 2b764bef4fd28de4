"""The class tree: the classes as leaves, any number of levels of groups above them, one root on top.

A level maps every class to a group of that level (``table[c] = group``, groups 0..g-1, none empty). Levels go
from the finest (just above the classes) to the coarsest, and each group lies inside exactly one group of the
next level: every node has one parent. Paper Table 1 cases are two-level trees (class -> superclass -> root);
CIFAR-100's is five-level (class -> 20 coarse -> 8 -> 4 -> 2 -> root, ``src/data/cifar100_levels.csv``).

The LCA height of two classes a, b (the height of their lowest common ancestor, leaves at height 0)::

    h(a, a) = 0,   h(a, b) = i  for the first level i (1 = the finest) where a and b share a group,
    h(a, b) = L + 1  where they share none (the root of a tree with L levels)

It is the distance of Making Better Mistakes and CRM (their "ilsvrc" distance). The number of edges on the path
between a and b (ProxyDR's ``calc_dist``) is 2·h(a, b), since every class sits at the same depth.
"""
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Optional

import numpy as np

from src.run.errors import UserError

ROWS_PER_BLOCK = 1024  # rows of h built at once: a (1024, K) block, 10 MB at K = 10,000
CLASS_LEVEL = "class"  # the name of the leaves in ``level_accuracy`` and ``metrics.json`` (``level_acc``)


class TreeError(UserError, ValueError):
    """A class tree is malformed (message is one line, fit for the user)."""


@dataclass(frozen=True)
class Level:
    name: str
    table: tuple[int, ...]          # class -> group of this level
    group_names: tuple[str, ...]    # one per group


class ClassTree:
    """A class hierarchy resolved once (``build()``) and handed to the module's callbacks and metrics."""

    def __init__(self, name: str, class_names: Sequence[str], levels: Sequence[Level]) -> None:
        self.name, self.class_names, self.levels = name, tuple(str(c) for c in class_names), tuple(levels)
        if not self.levels:
            raise TreeError(f"class tree '{name}' has no level above its classes")
        if len({level.name for level in self.levels} | {CLASS_LEVEL}) != len(self.levels) + 1:
            raise TreeError(f"class tree '{name}': level names {[l.name for l in self.levels]} must be distinct "
                            f"and not '{CLASS_LEVEL}'")
        k = len(self.class_names)
        for level in self.levels:
            t = level.table
            if len(t) != k:
                raise TreeError(f"level '{level.name}' of tree '{name}' maps {len(t)} classes, the tree has {k}")
            if set(t) != set(range(max(t) + 1)) or len(level.group_names) != max(t) + 1:
                raise TreeError(f"level '{level.name}' of tree '{name}': groups must be 0..g-1 with none empty "
                                f"and one name each")
        for child, parent in zip(self.levels, self.levels[1:]):
            first: dict[int, int] = {}  # group -> the parent of its first class: O(K), for 10,000 classes too
            for g, p in zip(child.table, parent.table):
                if first.setdefault(g, p) != p:
                    parents = sorted({parent.table[c] for c in range(k) if child.table[c] == g})
                    raise TreeError(f"tree '{name}': group {child.group_names[g]} of level '{child.name}' lies in "
                                    f"groups {parents} of level '{parent.name}'; every node needs exactly one parent")

    @classmethod
    def from_table(cls, name: str, table: Sequence[int], class_names: Sequence[str],
                   group_names: Optional[Sequence[str]] = None, level: str = "superclass") -> "ClassTree":
        """A two-level tree, class -> superclass -> root (a Table 1 case or a one-level custom mapping)."""
        table = tuple(int(s) for s in table)
        names = tuple(group_names) if group_names is not None else tuple(f"s{s}" for s in range(max(table) + 1))
        return cls(name, class_names, [Level(level, table, names)])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def level_names(self) -> tuple[str, ...]:
        return tuple(level.name for level in self.levels)

    def level(self, name: str) -> Level:
        for level in self.levels:
            if level.name == name:
                return level
        raise TreeError(f"tree '{self.name}' has no level '{name}'; its levels are {list(self.level_names)}")

    def table(self, name: str) -> list[int]:
        """Class -> group of level ``name``."""
        return list(self.level(name).table)

    @cached_property
    def lca_heights(self) -> np.ndarray:
        """h (K, K), the module docstring's LCA height: 0 on the diagonal, at most L + 1. The one matrix of the tree
        every metric shares (cached, read-only), in the smallest unsigned integer dtype that holds L + 1: uint8 up to
        254 levels, so 100 MB at 10,000 classes. Built a block of rows at a time (no K × K temporary but itself)."""
        k, top = self.num_classes, len(self.levels) + 1
        h = np.empty((k, k), dtype=np.min_scalar_type(top))
        tables = [np.asarray(level.table) for level in self.levels]
        for start in range(0, k, ROWS_PER_BLOCK):
            rows = slice(start, min(start + ROWS_PER_BLOCK, k))
            # h(a, b) = Σ_{i=0..L} [g_i(a) ≠ g_i(b)] with g_0 the class itself: the groups are nested
            block = (np.arange(start, rows.stop)[:, None] != np.arange(k)[None, :]).astype(h.dtype)
            for t in tables:
                block += t[rows, None] != t[None, :]
            h[rows] = block
        h.flags.writeable = False
        return h

    @cached_property
    def node_counts(self) -> tuple[int, ...]:
        """Real nodes per depth, root (depth 0) first, the classes' depth L + 1 last, each node counted once.

        A tree whose leaves sit at different depths is padded (``src.data.mbm``): a class c above its own depth is
        a group of that one class, named as a class. Such a group is c, not a new node; c counts at the depth of
        its shallowest copy. Internal nodes are never named as classes, so a real one-child node counts. On a tree
        without padding this is 1, the group counts, then K."""
        names = set(self.class_names)
        depth_of_class = [len(self.levels) + 1] * self.num_classes
        counts = [1] + [0] * len(self.levels) + [0]
        for depth, level in zip(range(len(self.levels), 0, -1), self.levels):   # finest (depth L) first
            padded = {g for g, name in enumerate(level.group_names) if name in names}
            counts[depth] = len(level.group_names) - len(padded)
            for c, g in enumerate(level.table):
                if g in padded:
                    depth_of_class[c] = depth
        for d in depth_of_class:
            counts[d] += 1
        return tuple(counts)

    @property
    def path_lengths(self) -> np.ndarray:
        """Edges on the path between two classes (ProxyDR's tree distance): 2·h, as float64 (K, K). A new array on
        every call: the metrics that run at 10,000 classes read ``lca_heights`` instead."""
        return 2.0 * self.lca_heights

    def __repr__(self) -> str:
        sizes = " -> ".join(str(n) for n in [self.num_classes, *(len(l.group_names) for l in self.levels), 1])
        return f"ClassTree({self.name!r}: {sizes})"


def as_tree(tree) -> Optional[ClassTree]:
    """A ``ClassTree`` as it is; a class -> superclass table as its two-level tree; None as None."""
    if tree is None or isinstance(tree, ClassTree):
        return tree
    table = [int(s) for s in tree]
    return ClassTree.from_table("superclasses", table, [str(c) for c in range(len(table))])
