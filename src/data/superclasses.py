"""Superclass tables (class index -> superclass index; paper, Table 1) and the cases that resolve to class trees.

A table is a list ``t`` with ``t[class] = superclass``. Every class is in exactly one superclass and
superclass indices are 0..s-1 with none empty; ``validate_table`` enforces this. A case (``conf/case/``) names a
class tree (``src.data.tree``) and the level of it that HAL's block is fed: ``dataset_cases`` lists the cases of a
dataset, ``resolve_case`` turns the ``case`` config into one, ``evaluation_tree`` the ``eval.hierarchy`` option.
``build()`` calls each once and hands the objects down.
"""
import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from src.data.random_tree import RANDOM, permuted_tree
from src.data.tree import ClassTree, Level, TreeError

CIFAR100_LEVELS = Path(__file__).with_name("cifar100_levels.csv")  # HAF's and HAFrame's tree: fine -> 20 -> 8 -> 4 -> 2
# ProxyDR's tree (GitHub hjk92g/ProxyDR, CIFAR100_cls.csv, its Path column): fine -> 20 -> 7 -> 3
CIFAR100_PROXYDR = Path(__file__).with_name("cifar100_proxydr.csv")

# The paper's Table 1 written as superclass -> classes, the way the paper prints it.
_DIGIT_CASES = {
    "case1": [[5, 6, 7, 8, 9], [0, 1, 2, 3, 4]],  # >= 5
    "case2": [[1, 3, 5, 7, 9], [0, 2, 4, 6, 8]],  # mod 2
    "case3": [[2, 3, 5, 7], [0, 1, 4, 6, 8, 9]],  # prime
    "case4": [[0, 6, 8, 9], [2, 3, 5], [1, 4, 7]],  # circle / curve / straight line
}
_CIFAR10_CASES = {
    "case1": _DIGIT_CASES["case1"],  # non-semantic, by label index
    "case2": _DIGIT_CASES["case2"],  # non-semantic, by label index
    "case3": [[2, 3, 4, 5, 6, 7], [0, 1, 8, 9]],  # animal / transportation
    "case4": [[1, 9], [3, 5], [4, 7], [0, 8], [2, 6]],  # car / small animal / big animal / craft / others
}
# digits (scikit-learn's 8x8 digits) is not in the paper; its classes are MNIST's, so it takes MNIST's cases.
PAPER_CASES = {"digits": _DIGIT_CASES, "mnist": _DIGIT_CASES, "svhn": _DIGIT_CASES, "cifar10": _CIFAR10_CASES}
CASES = ("case1", "case2", "case3", "case4")


class SuperclassError(TreeError):
    """A superclass mapping is malformed (message is one line, fit for the user)."""


def groups_to_table(groups: Sequence[Sequence[int]], num_classes: int) -> list[int]:
    """[[classes of superclass 0], [classes of superclass 1], ...] -> validated table."""
    table: list[Optional[int]] = [None] * num_classes
    for s, members in enumerate(groups):
        if len(members) == 0:
            raise SuperclassError(f"superclass {s} is empty")
        for c in members:
            if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < num_classes:
                raise SuperclassError(f"superclass {s} lists class {c!r}, not a class index in 0..{num_classes - 1}")
            if table[c] is not None:
                raise SuperclassError(f"class {c} is in superclass {table[c]} and superclass {s}; it must be in exactly one")
            table[c] = s
    missing = [c for c, s in enumerate(table) if s is None]
    if missing:
        raise SuperclassError(f"classes {missing} are in no superclass; every class must be in exactly one")
    return validate_table(table, num_classes)


def validate_table(table: Sequence[int], num_classes: int) -> list[int]:
    """Check a class -> superclass table; return it as a list of ints."""
    table = list(table)
    if len(table) != num_classes:
        raise SuperclassError(f"superclass table has {len(table)} entries for {num_classes} classes")
    for c, s in enumerate(table):
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise SuperclassError(f"class {c} maps to {s!r}; superclass indices must be non-negative integers")
    used = set(table)
    if used != set(range(len(used))):
        missing = sorted(set(range(max(used) + 1)) - used)
        raise SuperclassError(f"superclass indices must be 0..s-1 with none empty; superclasses {missing} have no class")
    return table


def superclass_table(dataset: str, case: str) -> list[int]:
    """The paper's Table 1 mapping for ``dataset`` (digits, mnist, svhn, cifar10) and ``case`` (case1..4)."""
    if dataset not in PAPER_CASES:
        raise SuperclassError(
            f"no paper superclasses for dataset '{dataset}' (have {sorted(PAPER_CASES)}); use case=custom "
            f"with dataset.superclass_file=PATH, case.file=PATH or case.mapping=...")
    if case not in PAPER_CASES[dataset]:
        raise SuperclassError(f"unknown case '{case}' for {dataset}; choose one of {list(CASES)} or custom")
    return groups_to_table(PAPER_CASES[dataset][case], 10)


def custom_table(
    mapping: Union[Mapping[str, Sequence[Union[str, int]]], Sequence[Sequence[Union[str, int]]]],
    class_names: Sequence[str],
) -> tuple[list[int], list[str]]:
    """A user mapping -> (table, superclass names).

    ``mapping`` is either {superclass name: [class names or indices]} or a list of such lists. Errors
    name the classes: one listed twice, one in no superclass, a name that is not a class.
    """
    if isinstance(mapping, Mapping):
        names, groups = [str(k) for k in mapping], list(mapping.values())
    elif isinstance(mapping, Sequence) and not isinstance(mapping, str):
        names, groups = [str(i) for i in range(len(mapping))], list(mapping)
    else:
        raise SuperclassError(f"a superclass mapping must be a dict or a list of lists, got {type(mapping).__name__}")
    if not groups:
        raise SuperclassError("the superclass mapping is empty")
    index = {name: i for i, name in enumerate(class_names)}
    n = len(class_names)
    owner: dict[int, str] = {}  # class index -> the superclass that lists it
    resolved = []
    for name, members in zip(names, groups):
        if isinstance(members, (str, int)) or not isinstance(members, Sequence):
            raise SuperclassError(f"superclass '{name}' must list classes, got {members!r}")
        if len(members) == 0:
            raise SuperclassError(f"superclass '{name}' is empty")
        ids = []
        for m in members:
            # YAML reads a folder named 7 as the int 7: an int that is a class name means that class.
            if isinstance(m, (str, int)) and not isinstance(m, bool) and str(m) in index:
                c = index[str(m)]
            elif isinstance(m, int) and not isinstance(m, bool) and 0 <= m < n:
                c = m
            else:
                raise SuperclassError(f"superclass '{name}' lists unknown class {m!r}; the classes are "
                                      f"{list(class_names)} (or their indices 0..{n - 1})")
            if c in owner:
                raise SuperclassError(f"class '{class_names[c]}' is in superclass '{owner[c]}' and superclass "
                                      f"'{name}'; it must be in exactly one")
            owner[c] = name
            ids.append(c)
        resolved.append(ids)
    missing = [class_names[c] for c in range(n) if c not in owner]
    if missing:
        raise SuperclassError(f"classes {missing} are in no superclass; every class must be in exactly one")
    return groups_to_table(resolved, n), names


@dataclass(frozen=True)
class Case:
    """A case: a class tree and the level of it fed to HAL's block as x* (``table``)."""
    name: str
    tree: ClassTree
    level: str

    @property
    def table(self) -> list[int]:
        return self.tree.table(self.level)

    @property
    def num_superclasses(self) -> int:
        return max(self.table) + 1


def cifar100_tree(class_names: Sequence[str], coarse_names: Optional[Sequence[str]] = None) -> ClassTree:
    """CIFAR-100's five-level tree from ``cifar100_levels.csv`` (columns fine, coarse, level3, level2, level1)."""
    with open(CIFAR100_LEVELS, newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["fine"]))
    if [int(r["fine"]) for r in rows] != list(range(len(class_names))):
        raise TreeError(f"{CIFAR100_LEVELS.name} does not list the {len(class_names)} classes 0..{len(class_names) - 1}")
    levels = []
    for name in ("coarse", "level3", "level2", "level1"):
        table = tuple(int(r[name]) for r in rows)
        names = coarse_names if name == "coarse" and coarse_names is not None else range(max(table) + 1)
        levels.append(Level(name, table, tuple(str(n) for n in names)))
    return ClassTree("cifar100", class_names, levels)


def cifar100_proxydr_tree(class_names: Sequence[str]) -> ClassTree:
    """ProxyDR's CIFAR-100 tree (``eval.hierarchy=proxydr``) from ``cifar100_proxydr.csv``: its class -> path table
    (``CIFAR100_cls.csv`` at hjk92g/ProxyDR aba6412: ``kingdom/group/superclass/class``), by fine label index.
    Groups are numbered in order of first appearance; a group is identified by its whole path."""
    with open(CIFAR100_PROXYDR, newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["fine"]))
    if [int(r["fine"]) for r in rows] != list(range(len(class_names))):
        raise TreeError(f"{CIFAR100_PROXYDR.name} does not list the {len(class_names)} classes 0..{len(class_names) - 1}")
    levels = []
    for name, depth in (("superclass", 3), ("group", 2), ("kingdom", 1)):
        paths = [tuple(r[k] for k in ("kingdom", "group", "superclass")[:depth]) for r in rows]
        order = list(dict.fromkeys(paths))
        levels.append(Level(name, tuple(order.index(p) for p in paths), tuple("/".join(p) for p in order)))
    return ClassTree("proxydr", class_names, levels)


def dataset_cases(dataset: str, class_names: Sequence[str], tree: Optional[ClassTree] = None) -> dict[str, Case]:
    """The named cases of a dataset: Table 1's two-level trees, and one per level of the dataset's own ``tree``
    (CIFAR-100: ``coarse``, ``level3``, ``level2``, ``level1``, all on its whole five-level tree)."""
    cases = {}
    if dataset in PAPER_CASES:
        cases = {c: Case(c, ClassTree.from_table(c, superclass_table(dataset, c), class_names), "superclass")
                 for c in CASES}
    if tree is not None:
        # A level may be a case of another name (iNaturalist's taxonomic_class is case=class).
        names = getattr(tree, "case_names", {})
        cases.update({names.get(level, level): Case(names.get(level, level), tree, level) for level in tree.level_names})
    return cases


def _read_mapping(path: str):
    import yaml

    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except OSError as e:
        raise SuperclassError(f"cannot read superclass file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise SuperclassError(f"superclass file {path} is not a text (UTF-8) file: case.file needs a "
                              "YAML mapping {superclass: [classes]}") from None
    except yaml.YAMLError as e:
        raise SuperclassError(f"superclass file {path} is not valid YAML: {str(e).splitlines()[0]}") from None


def custom_tree(mapping, class_names: Sequence[str]) -> ClassTree:
    """A user mapping -> its tree: {superclass: [classes]} (two levels), or several levels finest first,
    ``{levels: {level name: {group: [classes]}, ...}}`` (each group lies in one group of the next level)."""
    if isinstance(mapping, Mapping) and set(mapping) == {"levels"}:
        levels = mapping["levels"]
        if not isinstance(levels, Mapping) or not levels:
            raise SuperclassError("'levels' must map each level name to {group: [classes]}, finest level first")
        resolved = []
        for name, groups in levels.items():
            table, names = custom_table(groups, class_names)
            resolved.append(Level(str(name), tuple(table), tuple(names)))
        return ClassTree("custom", class_names, resolved)
    table, names = custom_table(mapping, class_names)
    return ClassTree.from_table("custom", table, class_names, names)


def resolve_case(case: Mapping, cases: Mapping[str, Case], class_names: Sequence[str],
                 dataset: str = "") -> Optional[Case]:
    """The ``case`` config as a ``Case`` (baseline -> None; custom -> the user's tree, fed ``case.level`` or its
    finest level; random -> ``case.of``'s tree with its classes permuted (``src.data.random_tree``); any other
    name -> that case of ``dataset_cases``)."""
    name = case["name"]
    if name == "baseline":
        return None
    if name == RANDOM:
        return random_case(case, cases, dataset)
    if name != "custom":
        if name in cases:
            return cases[name]
        if not cases:
            raise SuperclassError(
                f"no named superclasses for dataset '{dataset}'; use case=custom with dataset.superclass_file=PATH, "
                f"case.file=PATH or case.mapping=...")
        raise SuperclassError(f"unknown case '{name}' for {dataset}; choose one of {list(cases)} or custom")
    mapping, path = case.get("mapping"), case.get("file")
    if (mapping is None) == (path is None):
        raise SuperclassError("case=custom needs exactly one of case.mapping=... or case.file=PATH "
                              "(case.file defaults to dataset.superclass_file)")
    tree = custom_tree(_read_mapping(path) if path is not None else mapping, class_names)
    level = case.get("level") or tree.level_names[0]
    tree.level(level)  # a one-line error for a level the tree does not have
    return Case("custom", tree, level)


def evaluation_tree(name: Optional[str], cases: Mapping[str, Case], case: Optional[Case],
                    dataset_tree: Optional[ClassTree] = None) -> Optional[ClassTree]:
    """The tree the hierarchy metrics score every run against (``eval.hierarchy``): ``default`` is the run's own
    tree when it gave one (``case=custom``: a thesis on its own hierarchy is scored on it), else the dataset's
    own tree (CIFAR-100's five levels), else its case1, else the run's case, else none;
    ``proxydr`` ProxyDR's CIFAR-100 tree (3 / 7 / 20 groups); ``custom`` / ``random`` the run's custom / random tree (``case=random``: ``src.data.random_tree``); a case name of the dataset its tree; null none."""
    if name is None:
        return None
    if name == "default":
        if case is not None and case.name == "custom":
            return case.tree
        if dataset_tree is not None:
            return dataset_tree
        if "case1" in cases:
            return cases["case1"].tree
        return case.tree if case is not None else None
    if name in ("custom", RANDOM):
        if case is None or case.name != name:
            raise SuperclassError(f"eval.hierarchy={name} scores against the run's own tree: it needs case={name}")
        return case.tree
    if name == "proxydr":
        if dataset_tree is None or dataset_tree.name != "cifar100":
            raise SuperclassError("eval.hierarchy=proxydr is ProxyDR's CIFAR-100 tree: it needs dataset=cifar100")
        return cifar100_proxydr_tree(dataset_tree.class_names)
    if name not in cases:
        raise SuperclassError(f"eval.hierarchy={name} is not a case of this dataset; choose default, custom, random, proxydr, null "
                              f"or one of {list(cases)}")
    return cases[name].tree


def random_case(case: Mapping, cases: Mapping, dataset: str = ""):
    """``case=random``: the named case ``case.of`` with its tree's classes permuted by ``case.shuffle_seed``;
    the level fed to HAL's block is the named case's."""
    of, seed = case.get("of"), case.get("shuffle_seed")
    if of is None or of in (RANDOM, "baseline", "custom") or of not in cases:
        raise TreeError(f"case=random needs case.of=<a named case of {dataset or 'the dataset'}> (the shape source), "
                        f"one of {list(cases)}; got {of!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TreeError(f"case.shuffle_seed must be an integer, got {seed!r}")
    source = cases[of]
    return Case(RANDOM, permuted_tree(source.tree, seed), source.level)
