"""``report.html``: the report's tables and figures on one self-contained page.

One section per question (``src.report.questions``), its table with a sticky header, its footnotes, and
under it the figures that belong to it, inlined as base64 PNG (``FIGURES``); at the top, a line per sweep dir
on what it was (command, commits, machine, seeds, runs not counted and why). No network, no script: the
page opens from the sweep dir, or from anywhere it is copied to. Built with ``string.Template``.
"""
import base64
import html
import re
from collections import defaultdict
from pathlib import Path
from string import Template

import yaml

from src.report.questions import HELP, HINT, MISTAKES, QUESTIONS, Table
from src.report.runs import Run, natural

UNFINISHED = "unfinished: still running, or killed (re-run the sweep to resume it)"
COMMAND_FILE = "command.txt"   # the command of a dir that is no Hydra multirun (a confirmation writes it)
# Which figures go under which question, by the figure file's kind (its name up to _<dataset>).
FIGURES = {"deltas": HELP, "loss": HELP, "aux_scores": HINT, "tradeoff": MISTAKES, "probes": MISTAKES}
FIGURE_CAPTIONS = {
    "deltas": "Δ vs baseline and fair Δ with their 95 % intervals and verdicts.",
    "loss": "Train and test loss per epoch, baseline against each case (the paper's Figures 2, 4, 6).",
    "aux_scores": "The auxiliary score of every training image by superclass: what the inferred protocol "
                  "reads without the hint (the paper's Figures 3, 5, 7).",
    "tradeoff": "Top-1 error against mistake severity, 95 % intervals on both axes; hollow markers: "
                "predictions made without the hint (inferred, CRM). Making Better Mistakes' Figure 1.",
    "probes": "Linear probes on each stage's features per epoch: how much of the hierarchy each stage holds.",
}

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 0 1.5em 4em; color: #1d1d1f; }
h1 { font-size: 1.5em; margin: 1em 0 0.3em; }
h2 { font-size: 1.2em; margin: 2em 0 0.5em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.sweep { background: #f5f5f7; border-radius: 6px; padding: 0.6em 0.9em; font-size: 0.9em; }
.sweep p { margin: 0.2em 0; }
nav a { margin-right: 1.2em; }
table { border-collapse: collapse; font-size: 0.88em; margin: 0.5em 0; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
thead th { position: sticky; top: 0; background: #fff; box-shadow: 0 1px 0 #999; z-index: 1; }
tbody tr:hover { background: #f7f9fc; }
.better { color: #137333; } .worse { color: #b3261e; }
.footnotes, .note, figcaption { font-size: 0.82em; color: #555; }
.footnotes ul { margin: 0.2em 0; padding-left: 1.3em; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
code { font-size: 0.92em; background: #f2f2f2; padding: 0 0.2em; border-radius: 3px; }
.notes { font-size: 0.85em; color: #333; }
</style>
</head>
<body>
<h1>$title</h1>
<div class="sweep">$sweep</div>
<nav>$nav</nav>
$sections
<h2 id="notes">Notes</h2>
<div class="notes">$notes</div>
</body>
</html>
""")

SECTION = Template("""<section id="$anchor">
<h2>$question</h2>
<table>
<thead><tr>$header</tr></thead>
<tbody>
$rows
</tbody>
</table>
$note$footnotes$figures</section>
""")


def _inline(text: str) -> str:
    """Escaped text with Markdown's `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(str(text)))


def _cell(text: str) -> str:
    klass = " class=\"better\"" if "✓" in text else " class=\"worse\"" if "✗" in text else ""
    return f"<td{klass}>{html.escape(text)}</td>"


def _footnote(text: str) -> str:
    """A footnote; its ``\n  - `` lines (a nested list in table.md) as a nested list."""
    first, *lines = text.split("\n  - ")
    return _inline(first) + (f"<ul>{''.join(f'<li>{_inline(line)}</li>' for line in lines)}</ul>" if lines else "")


def figure_kind(path: Path) -> str:
    return next((k for k in sorted(FIGURES, key=len, reverse=True) if path.name.startswith(k + "_")), "")


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = FIGURE_CAPTIONS.get(figure_kind(path), "")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'
            f"<figcaption>{html.escape(path.name)}: {html.escape(caption)}</figcaption></figure>\n")


def anchor(table: Table) -> str:
    return table.key + ("" if table.part == 1 else f"-{table.part}")


def section(table: Table, figures: list[Path]) -> str:
    rows = "\n".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in table.cells)
    footnotes = ""
    if table.footnotes:
        items = "".join(f"<li>{_footnote(f)}</li>" for f in table.footnotes)
        footnotes = (f'<div class="footnotes">p-values (Holm across this table\'s rows), tests and the seeds a '
                     f"paired test would need:<ul>{items}</ul></div>\n")
    return SECTION.substitute(
        anchor=anchor(table), question=html.escape(table.question),
        header="".join(f"<th>{html.escape(h)}</th>" for h in table.header), rows=rows,
        note=f'<p class="note">{_inline(table.note)}</p>\n' if table.note else "", footnotes=footnotes,
        figures="".join(_figure(p) for p in figures))


def notes_html(lines: list[str]) -> str:
    """The report's notes (Markdown paragraphs and ``- `` items) as HTML."""
    out, items = [], []
    for line in lines + [""]:
        if line.startswith("- "):
            items.append(f"<li>{_inline(line[2:])}</li>")
            continue
        if items:
            out.append("<ul>" + "".join(items) + "</ul>")
            items = []
        if line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    return "\n".join(out)


def sweep_command(sweep: Path) -> str:
    """``python -m src.train -m <overrides>`` from the sweep's ``multirun.yaml``; else the command a dir that is no
    multirun recorded in ``COMMAND_FILE`` (a confirmation, ``src.tuning.confirm``); empty if it has neither."""
    try:
        task = yaml.safe_load((sweep / "multirun.yaml").read_text())["hydra"]["overrides"]["task"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        try:
            return (sweep / COMMAND_FILE).read_text().strip()
        except OSError:
            return ""
    return "python -m src.train -m " + " ".join(str(t) for t in task or [])


def _machine(runs: list[Run]) -> str:
    machines = sorted({str(r.record["machine"]) for r in runs if r.record.get("machine")})
    threads = sorted({r.record["threads"] for r in runs if isinstance(r.record.get("threads"), int)})
    text = "; ".join(machines) if machines else "not recorded"
    return text + (f" ({'/'.join(str(t) for t in threads)} threads)" if threads else "")


def _relative(path: Path, sweep: Path) -> str:
    return str(path.relative_to(sweep.resolve()) if path.is_relative_to(sweep.resolve()) else path)


def sweep_lines(sweep_dirs: list[Path], runs: list[Run]) -> list[str]:
    """One paragraph per sweep dir: what it was and which of its runs were not counted."""
    by_sweep = defaultdict(list)
    for r in runs:
        by_sweep[r.sweep].append(r)
    lines = []
    for sweep in sweep_dirs:
        members = by_sweep.get(sweep.resolve(), [])
        counted = [r for r in members if r.finished]
        command = sweep_command(sweep)
        commits = sorted({str(r.record.get("git_commit"))[:10] for r in counted if r.record.get("git_commit")})
        seeds = sorted({r.seed for r in counted if r.seed is not None}, key=natural)
        text = (f"<b>{html.escape(str(sweep))}</b>: "
                f"command <code>{html.escape(command) if command else 'not recorded (no multirun.yaml)'}</code>; "
                f"commit {html.escape(', '.join(commits) or 'not recorded')}; "
                f"machine {html.escape(_machine(counted))}; "
                f"seeds {html.escape(' '.join(str(s) for s in seeds) or 'none')}; "
                f"{len(counted)} of {len(members)} runs counted.")
        lines.append(f"<p>{text}</p>")
        problems = sorted((r for r in members if not r.finished), key=lambda r: str(r.dir))
        if problems:
            items = "".join(f"<li><code>{html.escape(_relative(r.dir, sweep))}</code> ({html.escape(r.status)}): "
                            f"{html.escape(r.problem or r.record.get('error') or UNFINISHED)}</li>" for r in problems)
            lines.append(f"<p>Not counted:</p><ul>{items}</ul>")
    return lines


def page(tables: list[Table], figures: list[Path], sweep_dirs: list[Path], runs: list[Run],
         notes: list[str]) -> str:
    """The whole page as one string. A figure goes under the first table of its question; figures of a
    question without a table go under the first table."""
    by_key = defaultdict(list)
    order = list(FIGURES)
    for path in sorted(figures, key=lambda p: (order.index(figure_kind(p)) if figure_kind(p) in order else len(order))):
        by_key[FIGURES.get(figure_kind(path), HELP)].append(path)
    keys = {t.key for t in tables}
    for key in list(by_key):
        if key not in keys and tables:
            by_key[tables[0].key] += by_key.pop(key)
    sections, placed = [], set()
    for t in tables:
        mine = by_key[t.key] if t.key not in placed else []
        placed.add(t.key)
        sections.append(section(t, mine))
    nav = " ".join(f'<a href="#{anchor(t)}">{html.escape(QUESTIONS[t.key])}</a>' for t in tables if t.part == 1)
    names = ", ".join(p.name for p in sweep_dirs)
    return PAGE.substitute(title=html.escape(f"Report: {names}"), sweep="\n".join(sweep_lines(sweep_dirs, runs)),
                           nav=nav + ' <a href="#notes">Notes</a>', sections="\n".join(sections),
                           notes=notes_html(notes))

