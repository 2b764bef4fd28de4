"""Superclass tables: class index -> superclass index (paper, Table 1).

A table is a list ``t`` with ``t[class] = superclass``. Every class is in exactly one superclass and
superclass indices are 0..s-1 with none empty; ``validate_table`` enforces this.
"""
from collections.abc import Mapping, Sequence
from typing import Optional, Union

from src.errors import UserError
from src.paper import CASES, PAPER_CASES



class SuperclassError(UserError, ValueError):
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


def resolve_case(case: Mapping, dataset: str, class_names: Sequence[str]) -> Optional[list[int]]:
    """The table for a ``case`` config (baseline -> None, case1..4 -> Table 1, custom -> user mapping)."""
    name = case["name"]
    if name == "baseline":
        return None
    if name != "custom":
        return superclass_table(dataset, name)
    mapping, path = case.get("mapping"), case.get("file")
    if (mapping is None) == (path is None):
        raise SuperclassError("case=custom needs exactly one of case.mapping=... or case.file=PATH "
                              "(case.file defaults to dataset.superclass_file)")
    if path is not None:
        import yaml

        try:
            with open(path) as f:
                mapping = yaml.safe_load(f)
        except OSError as e:
            raise SuperclassError(f"cannot read superclass file {path}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise SuperclassError(f"superclass file {path} is not a text (UTF-8) file: case.file needs a "
                                  "YAML mapping {superclass: [classes]}") from None
        except yaml.YAMLError as e:
            raise SuperclassError(f"superclass file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    return custom_table(mapping, class_names)[0]
