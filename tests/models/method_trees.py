"""Class trees the method tests share: a 10-class paper case, a 10-class three-level tree, CIFAR-100's."""
from src.data.superclasses import cifar100_tree, dataset_cases
from src.data.tree import ClassTree, Level

DIGITS = [str(c) for c in range(10)]


def trees() -> dict[str, ClassTree]:
    three_levels = ClassTree("three", DIGITS, [Level("superclass", (0, 0, 1, 1, 1, 2, 2, 3, 3, 3), ("a", "b", "c", "d")),
                                               Level("group", (0, 0, 0, 0, 0, 1, 1, 1, 1, 1), ("x", "y"))])
    return {"digits_case1": dataset_cases("digits", DIGITS)["case1"].tree, "three_levels": three_levels,
            "cifar100": cifar100_tree([f"c{i}" for i in range(100)])}


class NltkTree(list):
    """The part of ``nltk.tree.Tree`` the official code uses: labels, tuple positions, ``treepositions``."""

    def __init__(self, label, children):
        super().__init__(children)
        self._label = label

    def label(self):
        return self._label

    def set_label(self, label):
        self._label = label

    def __getitem__(self, index):
        if isinstance(index, tuple):
            node = self
            for i in index:
                node = list.__getitem__(node, i)
            return node
        return list.__getitem__(self, index)

    def __setitem__(self, index, value):
        if isinstance(index, tuple):
            list.__setitem__(self[index[:-1]], index[-1], value)
        else:
            list.__setitem__(self, index, value)

    def treepositions(self, order="preorder"):   # nltk's own implementation
        positions = []
        if order in ("preorder", "bothorder"):
            positions.append(())
        for i, child in enumerate(self):
            if isinstance(child, NltkTree):
                positions.extend((i,) + p for p in child.treepositions(order))
            else:
                positions.append((i,))
        if order in ("postorder", "bothorder"):
            positions.append(())
        return positions


def as_nltk(tree: ClassTree) -> NltkTree:
    """The tree as MBM's nltk hierarchy: root -> coarsest groups -> ... -> class names as leaves."""
    def node(depth: int, members: list[int]):
        if depth == len(tree.levels):          # below the finest level: the classes themselves
            return [tree.class_names[c] for c in members]
        level = tree.levels[len(tree.levels) - 1 - depth]
        groups = sorted({level.table[c] for c in members})
        return [NltkTree(f"{level.name}-{g}", node(depth + 1, [c for c in members if level.table[c] == g]))
                for g in groups]
    return NltkTree("root", node(0, list(range(tree.num_classes))))
