"""The report's rows as short tables that answer one question each, at most ``MAX_COLUMNS`` wide.

    Does it help?                    test error, Δ vs baseline, fair Δ (+ the paper's values for plain HAL)
    Without the hint?                inferred, shuffled, CRM, masked
    How bad are the mistakes?        severity, HD@k, ECE, level / superclass accuracy, learned-tree scores
    At what cost?                    images/s, FLOPs, parameters at training and inference, epochs
    Does the tree's meaning matter?  a method on the real tree against the same method on a random one
                                     (only with random-tree runs: ``src.report.control``)

A Δ cell reads ``−0.80 [−1.03, −0.58] ✓ better``; its p-value, Holm value, test and the seeds a paired test
would need go to one footnote line per row, and every number, unrounded, to ``table.csv``. Rendered as
Markdown here (``table.md``) and as HTML by ``src.report.page``; both read the same ``Table``s.
"""
import math
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

from src.report.provenance import footnote as provenance_footnote
from src.report.rows import COLUMNS
from src.report.runs import DEFAULT_POSITION

MAX_COLUMNS = 10
MINUS = "\u2212"
VERDICT_MARKS = {"better": "✓ better", "worse": "✗ worse"}
HELP, HINT, MISTAKES, COST, TREE = "help", "hint", "mistakes", "cost", "tree"
QUESTIONS = {HELP: "Does it help?", HINT: "Without the hint?", MISTAKES: "How bad are the mistakes?",
             COST: "At what cost?", TREE: "Does the tree's meaning matter?"}
HEADERS = {c.measure: c.header for c in COLUMNS}
DIGITS = {c.measure: c.digits for c in COLUMNS}
# The measures of "How bad are the mistakes?", in this order where the rows have them; ``@`` / ``.`` entries are
# prefixes (one column per k / level). Methods-only measures are those of COLUMNS with table2=False.
MISTAKE_MEASURES = ["mistake_severity", "mistake_severity_crm", "hierarchical_distance@", "ece", "mce",
                    "superclass_acc", "within_superclass_mistakes", "level_acc.", "hierarchy_mean_corr",
                    "hierarchy_rf"]
HINT_MEASURES = ["test_error_inferred", "test_error_shuffled", "test_error_crm"]
EXTRA_HEADERS = {"mistake_severity_crm": ("CRM severity", 3), "mce": ("MCE", 3)}


@dataclass
class Table:
    """One question's table: ``header`` and ``cells`` (strings), ``footnotes`` (one line per row that has any),
    ``key`` (HELP, HINT, ...: which figures belong under it), ``part`` (2, 3, ... for a question split to
    stay within ``MAX_COLUMNS``)."""
    key: str
    header: list[str]
    cells: list[list[str]]
    footnotes: list[str] = field(default_factory=list)
    note: str = ""
    part: int = 1

    @property
    def question(self) -> str:
        return QUESTIONS[self.key] + (f" (continued, {self.part})" if self.part > 1 else "")


# --- cells ---------------------------------------------------------------------------------------------------

def _nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(mean: float, std: float, digits: int = 2) -> str:
    if _nan(mean):
        return ""
    return f"{mean:.{digits}f}" + ("" if _nan(std) else f" ± {std:.{digits}f}")


def signed(value: Optional[float]) -> str:
    """``+0.44`` / ``−0.80`` (a true minus sign); empty for a missing value."""
    return "" if _nan(value) else f"{value:+.2f}".replace("-", MINUS)


def cell(r: dict, name: str, digits: int = 2) -> str:
    return fmt(r.get(f"{name}_mean", math.nan), r.get(f"{name}_std", math.nan), digits)


def delta_cell(r: dict, value: str, prefix: str, short: str, marks: dict = VERDICT_MARKS) -> str:
    """``−0.80 [−1.03, −0.58] ✓ better``: the Δ, its 95 % interval where it has one, the verdict."""
    if _nan(r.get(value)):
        return ""
    text = signed(r[value])
    if r.get(f"{prefix}_ci_low") is not None:
        text += f" [{signed(r[f'{prefix}_ci_low'])}, {signed(r[f'{prefix}_ci_high'])}]"
    return f"{text} {marks.get(r[f'{short}verdict'], r[f'{short}verdict'])}"


def delta_footnote(r: dict, name: str, value: str, prefix: str, short: str) -> str:
    """``Δ p=0.256, Holm 0.721, paired, needs 25 seeds``; ``Δ no p`` for one seed or zero variance."""
    if _nan(r.get(value)):
        return ""
    if r[f"{prefix}_p"] is None:
        return f"{name} no p"
    needed = r[f"{short}seeds_needed"]
    return (f"{name} p={r[f'{prefix}_p']:.3g}, Holm {r[f'{prefix}_p_holm']:.3g}, {r[f'{short}test']}" +
            (f", needs {needed} seeds" if needed is not None else ""))


def masked_cell(r: dict) -> str:
    """The masked error of each case the row's runs were scored on; just the number for the row's own case."""
    cases = [k[len("test_error_masked."):-len("_mean")] for k, v in r.items()
             if k.startswith("test_error_masked.") and k.endswith("_mean") and not _nan(v)]
    if cases == [r["case"]]:
        return cell(r, f"test_error_masked.{r['case']}")
    return "; ".join(f"{c} {cell(r, f'test_error_masked.{c}')}" for c in cases)


def params_cell(r: dict) -> str:
    train, inference = r.get("params_train_mean", math.nan), r.get("params_inference_mean", math.nan)
    if _nan(train) and _nan(inference):
        return ""
    text = " / ".join("" if _nan(v) else f"{v:,.0f}" for v in (train, inference))
    deltas = [r.get("params_train_vs_baseline", math.nan), r.get("params_inference_vs_baseline", math.nan)]
    if all(_nan(d) for d in deltas) or (r["method"] == "hal" and r["case"] == "baseline"):
        return text
    return text + " (" + " / ".join("" if _nan(d) else f"{d:+,.0f}".replace("-", MINUS) for d in deltas) + ")"


def flops_cell(r: dict) -> str:
    value = r.get("flops_per_train_image_mean", math.nan)
    return "" if _nan(value) else f"{value:.3g}"


def ratio_cell(r: dict) -> str:
    ratio = r.get("train_images_per_s_vs_baseline", math.nan)
    return "" if _nan(ratio) else f"{ratio:.2f}×"


def error_cell(r: dict) -> str:
    return f"{fmt(r['test_error_mean'], r['test_error_std'])} (n={r['n']})" if r["n"] else "(n=0)"


# --- tables --------------------------------------------------------------------------------------------------

Column = tuple[str, Callable[[dict], str]]  # header, cell of a row


def identity(rows: list[dict], methods: bool) -> list[Column]:
    """The columns that say which row it is: dataset, depth, settings (where they differ), method and
    position (the methods layout; position only where some row has another), case."""
    columns: list[Column] = [("dataset", lambda r: r["dataset"]), ("depth", lambda r: str(r["depth"]))]
    if len({r["settings"] for r in rows}) > 1:
        columns.append(("settings", lambda r: r["settings"] or "(none)"))
    if methods:
        columns.append(("method", lambda r: r["method"]))
        if any(r["position"] != DEFAULT_POSITION for r in rows):
            columns.append(("position", lambda r: str(r["position"])))
    columns.append(("case", lambda r: r["case"]))
    return columns


def row_label(r: dict, ident: list[Column]) -> str:
    return " ".join(c(r) for _, c in ident)


def build(key: str, rows: list[dict], ident: list[Column], measures: list[Column], keep_empty: int = 0,
          footnote: Optional[Callable[[dict], str]] = None, note: str = "") -> list[Table]:
    """The question's tables: the identity columns, then the measure columns that any row fills (the first
    ``keep_empty`` always), over the rows that fill any; split into parts of at most ``MAX_COLUMNS``."""
    filled = [m for i, m in enumerate(measures) if i < keep_empty or any(m[1](r) for r in rows)]
    shown = [r for r in rows if any(m[1](r) for m in filled[keep_empty:]) or keep_empty]
    if not filled[keep_empty:] or not shown:
        return []
    width = MAX_COLUMNS - len(ident)
    tables = []
    for part, start in enumerate(range(0, len(filled), width), 1):
        chunk = filled[start:start + width]
        cells = [[c(r) for _, c in ident] + [c(r) for _, c in chunk] for r in shown]
        notes = [f"{row_label(r, ident)}: {text}" for r in shown if (text := footnote(r))] \
            if footnote and part == 1 else []
        tables.append(Table(key, [h for h, _ in ident] + [h for h, _ in chunk], cells, notes,
                            note if part == 1 else "", part))
    return tables


def _measure(name: str) -> Column:
    header, digits = EXTRA_HEADERS.get(name, (HEADERS.get(name, name), DIGITS.get(name, 2)))
    return header, lambda r: cell(r, name, digits)


def _measures_of(rows: list[dict], names: list[str]) -> list[str]:
    """The measures ``names`` that the rows have, a prefix (``level_acc.``) expanded to each measure it starts."""
    present = [k[:-len("_mean")] for k in rows[0] if k.endswith("_mean")] if rows else []
    found = []
    for name in names:
        if name.endswith((".", "@")):
            found += sorted((m for m in present if m.startswith(name)),
                            key=lambda m: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", m)])
        elif name in present:
            found.append(name)
    return found


def _level_header(measure: str) -> str:
    if measure.startswith("hierarchical_distance@"):
        return HEADERS.get(measure, "HD@" + measure.split("@", 1)[1])
    level = measure.split(".", 1)[1]
    if level == "class":
        return "top-1 acc %"
    # a tree level named superclass is the eval tree's (``hierarchy_name``), not the run's case (superclass_acc)
    return f"{level} acc %" + (" (eval tree)" if f"{level} acc %" in HEADERS.values() else "")


UNTUNED = "one recipe per arm, not tuned: the verdict may reflect the recipe"


def untuned_footnote(r: dict) -> str:
    """``UNTUNED`` for a row with a verdict whose runs are not all a tuned confirmation's (``tuned.yaml`` beside
    each, ``src.tuning.confirm``): the methods_* presets train every arm with one recipe, chosen, not searched."""
    verdict = r.get("verdict") or r.get("fair_verdict")
    return UNTUNED if verdict and r.get("tuned_runs", 0) < r["n"] else ""


def help_footnote(r: dict) -> str:
    parts = [delta_footnote(r, "Δ", "delta_vs_baseline", "delta", ""),
             delta_footnote(r, "fair Δ", "fair_delta", "fair_delta", "fair_"), untuned_footnote(r),
             provenance_footnote(r)]
    return "; ".join(p for p in parts if p)


def question_tables(rows: list[dict], methods: bool, extra: Optional[list[Table]] = None) -> list[Table]:
    """Every question's tables for the report's rows; ``methods``: the layout that compares methods (method and
    position columns, no paper values), else the paper's Table 2 layout. ``extra``: tables to append
    (the random-tree control's)."""
    ident = identity(rows, methods)
    error = ("oracle test error % (mean ± std, n)" if methods else "test error % (mean ± std, n)", error_cell)
    delta = ("Δ vs baseline [95 % CI]", lambda r: delta_cell(r, "delta_vs_baseline", "delta", ""))
    fair = ("fair Δ [95 % CI]", lambda r: delta_cell(r, "fair_delta", "fair_delta", "fair_"))
    paper = [("paper", lambda r: fmt(r["paper_test_error"], r["paper_test_error_std"]) + differs(r)
              if r["paper_test_error"] is not None else ""),
             ("paper Δ", lambda r: signed(r["paper_delta_vs_baseline"]) + differs(r)
              if r["paper_delta_vs_baseline"] is not None else "")]
    flags = ("flags", lambda r: r["flags"])
    tables = build(HELP, rows, ident, [error, delta] + ([] if methods else paper) + [fair, flags], keep_empty=1,
                   footnote=help_footnote)
    hint = [_measure(m) for m in _measures_of(rows, HINT_MEASURES)] + [("masked %", masked_cell)]
    tables += build(HINT, rows, ident, hint)
    allowed = [m for m in MISTAKE_MEASURES if methods or m not in ("hierarchy_mean_corr", "hierarchy_rf")]
    mistakes = [(_level_header(m), lambda r, m=m: cell(r, m, 3 if "@" in m else 2))
                if m.startswith(("hierarchical_distance@", "level_acc.")) else _measure(m)
                for m in _measures_of(rows, allowed)]
    tables += build(MISTAKES, rows, ident, mistakes)
    cost = [("img/s vs baseline", ratio_cell), ("FLOPs / train image", flops_cell),
            ("params train / inference (vs baseline)", params_cell), ("epochs", lambda r: r["epochs"])]
    tables += build(COST, rows, ident, cost)
    return tables + list(extra or [])


# --- Markdown ------------------------------------------------------------------------------------------------

def _escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def differs(row: dict) -> str:
    """The flag beside the paper's numbers when the row's runs leave its recipe: `` ≠ 1 of 250 epochs``."""
    return f" ≠ {row['paper_differs']}" if row.get("paper_differs") else ""


def markdown_table(table: Table) -> list[str]:
    lines = [f"## {table.question}", ""]
    lines += ["| " + " | ".join(_escape(h) for h in table.header) + " |", "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in table.cells]
    if table.note:
        lines += ["", table.note]
    if table.footnotes:
        lines += ["", "p-values (Holm across this table's rows), tests and the seeds a paired test would need:", ""]
        lines += [f"- {f}" for f in table.footnotes]
    return lines + [""]


def markdown(tables: list[Table]) -> str:
    return "\n".join(line for t in tables for line in markdown_table(t))
