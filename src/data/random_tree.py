"""The random-tree control (``case=random``): a class tree of the same shape as a named case's, with the classes
permuted, as Making Better Mistakes' ``--shuffle_classes`` (``scripts/start_training.py`` shuffles the class list
that is matched against the tree's leaves) and HAF's ``data/random_hierarchy/``.

For a permutation π of the K classes drawn by ``case.shuffle_seed``, every level's table becomes
``table'[c] = table[π(c)]``: class c takes the place of class π(c) in the tree. The number of levels, the groups,
their sizes at every level and their nesting are unchanged; only which classes share a group is random. A
hint-using method trained on it shows how much of a gain comes from the tree's meaning rather than its shape.
"""
from typing import Optional

import numpy as np

from src.data.tree import ClassTree, Level

RANDOM = "random"


def permuted_tree(tree: ClassTree, seed: int, name: Optional[str] = None) -> ClassTree:
    """``tree`` with its classes permuted by ``np.random.default_rng(seed).permutation(K)``."""
    pi = np.random.default_rng(seed).permutation(tree.num_classes)
    levels = [Level(level.name, tuple(level.table[int(p)] for p in pi), level.group_names) for level in tree.levels]
    return ClassTree(name or f"{RANDOM}({tree.name},{seed})", tree.class_names, levels)

