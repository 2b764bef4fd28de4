"""The random-tree control: does a method's gain come from the tree's meaning, or only from its shape?

A random-tree run (``case=random``) trains on a tree of the same shape as a named case, with the classes
permuted (MBM's ``--shuffle_classes``; HAF's ``data/random_hierarchy/``). Its ``.hydra/config.yaml`` says
which case it copies (``case.of``) and the permutation (``case.shuffle_seed``); ``src.report.runs`` groups it as case
``random(<case.of>)``, pooled over shuffle seeds. Here each such group meets the group of the same dataset,
depth, settings, method and position on the real tree (case ``<case.of>``):

    tree Δ = test error on the real tree − test error on the random tree   (negative: the meaning helps)

paired by seed where both have the same seeds, else Welch's test (``src.report.stats.compare``), with Holm's
correction across the rows of this table, as every Δ of the report; the same for the mistake severity.
"""
import math
import re
from typing import Optional

from src.report.questions import TREE, Column, Table, build, cell, delta_cell, delta_footnote, error_cell, identity
from src.report.runs import Group, RANDOM_CASE as RANDOM
from src.report.stats import compare, holm, seeds_needed, verdict

_LABEL = re.compile(rf"^{RANDOM}\((?P<of>.+)\)$")
# (measure, column prefix in table.csv, verdict prefix)
COMPARED = (("test_error", "tree_delta", "tree_"), ("mistake_severity", "tree_severity_delta", "tree_severity_"))
MARKS = {"better": "✓ real tree better", "worse": "✗ random tree better"}
NOTE = ("tree Δ: the method on the real tree minus the same method on a random tree of the same shape "
        "(negative = the tree's meaning helps, not only its shape); severity Δ the same for the mistake severity. "
        "Random trees pooled over their shuffle seeds (`case.shuffle_seed`).")


def copied_case(case: str) -> Optional[str]:
    """``random(case1)`` -> ``case1``; None for a case on a real tree."""
    match = _LABEL.match(case)
    return match["of"] if match else None


def _empty() -> dict:
    row = {"real_tree_test_error_mean": math.nan, "shuffle_seeds": ""}
    for _, prefix, short in COMPARED:
        row.update({prefix: math.nan, f"{prefix}_ci_low": None, f"{prefix}_ci_high": None, f"{prefix}_p": None,
                    f"{prefix}_p_holm": None, f"{short}verdict": "", f"{short}seeds_needed": None, f"{short}test": ""})
    return row


def add_tree_columns(groups: list[Group], rows: list[dict], alpha: float) -> None:
    """Add the control's columns to every row (empty but for random-tree rows), beside those of table.csv."""
    by_key = {(g.dataset, g.depth, g.settings, g.method, g.position, g.case): g for g in groups}
    compared = []
    for g, row in zip(groups, rows):
        row.update(_empty())
        of = copied_case(g.case)
        real = by_key.get((g.dataset, g.depth, g.settings, g.method, g.position, of)) if of else None
        found = []
        if real is not None:
            row["real_tree_test_error_mean"] = real.stats("test_error")[0]
            seeds = sorted({str(r.config.get("case.shuffle_seed")) for r in g.finished if r.config
                            and r.config.get("case.shuffle_seed") is not None})
            row["shuffle_seeds"] = " ".join(seeds)
            for measure, prefix, short in COMPARED:
                c = compare(real.values(measure), g.values(measure))
                found.append(c)
                if c is not None:
                    row.update({prefix: c.delta, f"{prefix}_ci_low": c.low, f"{prefix}_ci_high": c.high,
                                f"{prefix}_p": c.p, f"{short}test": c.test})
        compared.append(found or [None] * len(COMPARED))
    for k, (_, prefix, short) in enumerate(COMPARED):
        for row, c, p in zip(rows, compared, holm([c[k].p if c[k] else None for c in compared])):
            row[f"{prefix}_p_holm"] = p
            row[f"{short}verdict"] = verdict(c[k], p, alpha)
            if row[f"{short}verdict"] == "no evidence" and c[k].p is not None:
                row[f"{short}seeds_needed"] = seeds_needed(c[k].delta, c[k].sd, alpha)


def _footnote(r: dict) -> str:
    parts = [delta_footnote(r, name, prefix, prefix, short)
             for name, (_, prefix, short) in zip(("tree Δ", "severity Δ"), COMPARED)]
    return "; ".join(p for p in parts if p)


def tree_tables(rows: list[dict]) -> list[Table]:
    """``Does the tree's meaning matter?``: one row per random-tree group that has its real-tree group."""
    shown = [r for r in rows if not math.isnan(r.get("tree_delta", math.nan))]
    if not shown:
        return []
    ident = [c for c in identity(rows, methods=True) if c[0] != "case"]
    ident.append(("case", lambda r: copied_case(r["case"]) or r["case"]))
    measures: list[Column] = [
        ("real tree error %", lambda r: "" if math.isnan(r["real_tree_test_error_mean"])
         else f"{r['real_tree_test_error_mean']:.2f}"),
        ("random tree error % (n)", error_cell),
        ("tree Δ [95 % CI]", lambda r: delta_cell(r, "tree_delta", "tree_delta", "tree_", MARKS)),
        ("severity Δ [95 % CI]", lambda r: delta_cell(r, "tree_severity_delta", "tree_severity_delta",
                                                        "tree_severity_", MARKS)),
        ("random severity", lambda r: cell(r, "mistake_severity", 3)),
    ]
    return build(TREE, shown, ident, measures, keep_empty=3, footnote=_footnote, note=NOTE)
