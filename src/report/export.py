"""Tables a paper can take: ``table.tex`` (``--format latex``) and ``table_long.csv`` (always).

- ``latex``: one booktabs table per question of ``table.md`` (``src.report.questions``), the same cells, the
  verdict marks kept (✓ ``\\ding{51}``, ✗ ``\\ding{55}``: ``\\usepackage{booktabs,pifont}``), each table's
  footnotes under it.
- ``long_rows``: one row per group × metric (mean, std, n, 95 % CI, p, Holm-corrected p, verdict), so that
  ``pandas.read_csv("table_long.csv")`` gives a tidy frame; the wide ``table.csv`` (one row per group, every
  number in its own column) stays as it was.
"""
import csv
import math
import re
from pathlib import Path

from src.report.questions import Table

# The plain network: method hal without its block (case baseline) is no method of its own.
BASELINE_LABEL = "baseline"
LONG_COLUMNS = ["dataset", "depth", "settings", "method", "position", "case", "metric", "mean", "std", "n",
                "ci_low", "ci_high", "p", "p_holm", "verdict", "test"]
# The comparisons of a row: (metric name in the long CSV, the row's value key, the prefix of its other keys,
# its verdict key); see docs/report.md for each.
DELTAS = [("delta_vs_baseline", "delta_vs_baseline", "delta", "verdict"),
          ("fair_delta", "fair_delta", "fair_delta", "fair_verdict"),
          ("tree_delta", "tree_delta", "tree_delta", "tree_verdict"),
          ("tree_severity_delta", "tree_severity_delta", "tree_severity_delta", "tree_severity_verdict")]


def method_label(row: dict) -> tuple[str, str]:
    """(method, position) as the CSVs show them: the plain network is ``baseline``, with no position."""
    if row.get("method") == "hal" and row.get("case") == BASELINE_LABEL:
        return BASELINE_LABEL, ""
    return str(row.get("method", "")), str(row.get("position", ""))


def _value(v):
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else v


def long_rows(rows: list[dict]) -> list[dict]:
    """One dict per group × metric: every ``<metric>_mean`` of the wide table, then every comparison (Δ)."""
    out = []
    for r in rows:
        method, position = method_label(r)
        base = {"dataset": r["dataset"], "depth": r["depth"], "settings": r.get("settings", ""), "method": method,
                "position": position, "case": r["case"]}
        for key in r:
            if key.endswith("_mean") and _value(r[key]) != "":
                name = key[:-len("_mean")]
                out.append({**base, "metric": name, "mean": r[key], "std": _value(r.get(f"{name}_std")),
                            "n": r.get("n", ""), "ci_low": _value(r.get(f"{name}_ci_low")),
                            "ci_high": _value(r.get(f"{name}_ci_high"))})
        for metric, value, prefix, verdict in DELTAS:
            if _value(r.get(value)) != "":
                out.append({**base, "metric": metric, "mean": r[value], "n": r.get("n", ""),
                            "ci_low": _value(r.get(f"{prefix}_ci_low")), "ci_high": _value(r.get(f"{prefix}_ci_high")),
                            "p": _value(r.get(f"{prefix}_p")), "p_holm": _value(r.get(f"{prefix}_p_holm")),
                            "verdict": r.get(verdict, ""), "test": r.get(_test_key(prefix), "")})
    return out


def _test_key(prefix: str) -> str:
    """The column naming a comparison's test: ``test``, ``fair_test``, ``tree_test``, ..."""
    return "test" if prefix == "delta" else prefix.removesuffix("delta") + "test"


def write_long_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LONG_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(long_rows(rows))


# Unicode of the markdown cells -> LaTeX (text mode).
SYMBOLS = {"±": r"$\pm$", "−": r"$-$", "Δ": r"$\Delta$", "✓": r"\ding{51}", "✗": r"\ding{55}", "α": r"$\alpha$",
           "≥": r"$\geq$", "≤": r"$\leq$", "×": r"$\times$", "·": r"$\cdot$", "→": r"$\rightarrow$",
           "⚠": r"(!)", "…": r"\ldots{}", "—": "---", "–": "--",
           "<": r"$<$", ">": r"$>$"}
SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
           "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def latex_text(text: str) -> str:
    """A markdown cell as LaTeX: specials escaped, ``**bold**`` and ```code``` kept, symbols mapped."""
    parts = re.split(r"(\*\*[^*]+\*\*|`[^`]+`)", str(text))
    out = []
    for part in parts:
        if part.startswith("**") and part.endswith("**") and len(part) > 4:
            out.append(r"\textbf{" + latex_text(part[2:-2]) + "}")
        elif part.startswith("`") and part.endswith("`") and len(part) > 2:
            out.append(r"\texttt{" + latex_text(part[1:-1]) + "}")
        else:
            out.append("".join(SPECIAL.get(c, SYMBOLS.get(c, c)) for c in part))
    return "".join(out)


def latex_table(table: Table) -> str:
    """One question as a booktabs ``table``: caption = the question, the footnotes under the tabular."""
    columns = "l" * min(3, len(table.header)) + "r" * max(0, len(table.header) - 3)
    lines = [r"\begin{table}[t]", r"\centering", r"\caption{" + latex_text(table.question) + "}",
             r"\begin{tabular}{" + columns + "}", r"\toprule",
             " & ".join(latex_text(h) for h in table.header) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_text(c) for c in row) + r" \\" for row in table.cells]
    lines += [r"\bottomrule", r"\end{tabular}"]
    notes = ([table.note] if table.note else []) + table.footnotes
    if notes:
        lines += [r"\par\smallskip\footnotesize"] + [latex_text(n) + r"\\" for n in notes]
    return "\n".join(lines + [r"\end{table}", ""])


def latex(tables: list[Table]) -> str:
    """``table.tex``: every question's table; needs ``\\usepackage{booktabs,pifont}`` in the preamble."""
    head = "% python -m src.report --format latex: needs \\usepackage{booktabs,pifont} (pifont: the ✓/✗ marks)\n"
    return head + "\n".join(latex_table(t) for t in tables)
