"""The arrows between the packages of src/ point only the ways docs/development.md allows, and never in a circle.

Every import of src/ counts, at the top of a module or inside a function (ast, nothing is imported). The allowed
directions are read from the table under "Which package may import which" in docs/development.md, so the page
and this test cannot drift apart: a new package needs its row there first."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "development.md"
HEADING = "## Which package may import which"


def allowed_imports(page: Path = PAGE) -> dict[str, tuple[str, ...]]:
    """{importer: (module prefixes it may import)} from the page's table: rows `| `src.x` | `src.a`, `src.b` | ...`."""
    text = page.read_text()
    assert HEADING in text, f"{page.name} lost its section {HEADING!r}"
    rules = {}
    for line in text.split(HEADING, 1)[1].split("\n## ", 1)[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) >= 2 and cells[0].startswith("`src"):
            for importer in re.findall(r"`(src[\w.]*)`", cells[0]):
                rules[importer] = tuple(re.findall(r"`(src[\w.]*)`", cells[1]))
    return rules


def module_name(path: Path, src: Path) -> str:
    parts = path.relative_to(src.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def src_modules(src: Path) -> dict[str, Path]:
    return {module_name(p, src): p for p in sorted(src.rglob("*.py"))}


def imports_of(path: Path, name: str, modules: dict) -> set[str]:
    """The src modules ``path`` (module ``name``) imports; ``from src.x import y`` is ``src.x.y`` when y is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text(), str(path))
    # `if TYPE_CHECKING:` imports exist for annotations only: they never run, so they draw no arrow
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return {m for m in found if m in modules}


def owner(name: str, rules: dict) -> str:
    """The table row of a module: the longest importer prefix that names it (``src.run.config`` -> ``src.run``);
    the row ``src`` is the package's ``__init__`` alone, so that a new package of src/ needs a row of its own."""
    rows = [r for r in rules if name == r or (r != "src" and name.startswith(r + "."))]
    return max(rows, key=len) if rows else ""


def violations(src: Path, rules: dict) -> list[str]:
    modules = src_modules(src)
    problems = []
    for name, path in modules.items():
        row = owner(name, rules)
        if not row:
            problems.append(f"{name}: no row of the import table in docs/development.md covers it")
            continue
        for target in sorted(imports_of(path, name, modules)):
            if not any(target == a or target.startswith(a + ".") for a in rules[row]):
                problems.append(f"{name} imports {target}: {row} may import only {', '.join(rules[row])}")
    return problems


def circles(src: Path) -> list[list[str]]:
    """Every import circle between src modules (each strongly connected component of more than one module, or a
    module importing itself), by Tarjan's algorithm."""
    modules = src_modules(src)
    graph = {n: imports_of(p, n, modules) for n, p in modules.items()}
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_import_of_src_points_the_way_the_page_allows():
    assert not violations(ROOT / "src", allowed_imports())


def test_no_import_circle_in_src():
    assert not circles(ROOT / "src")


def test_the_report_never_imports_training():
    rules = allowed_imports()
    assert set(rules["src.report"]) == {"src.report", "src.run.records", "src.run.errors"}
    for package in ("src.data", "src.models"):
        assert set(rules[package]) == {package, "src.run.errors"}
    assert set(rules["src.run"]) == {"src.run"}


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "src"


@pytest.mark.parametrize("importer, line", [
    ("report/rows.py", "from src.train import build"),                      # the report imports training
    ("report/rows.py", "def f():\n    from src.data import tree\n"),       # inside a function, `from src import` form
    ("run/launch.py", "from src.evaluation.protocols import error"),        # run/ imports evaluation/
    ("models/module.py", "import src.data.tree"),                          # models/ imports data/
    ("data/tree.py", "from ..run.config import Config"),                   # relative, beyond run.errors
])
def test_a_planted_bad_import_is_found(tmp_path, importer, line):
    files = {"__init__.py": "", "train.py": "", "run/__init__.py": "", "run/launch.py": "", "run/config.py": "",
             "run/errors.py": "", "evaluation/__init__.py": "", "evaluation/protocols.py": "",
             "report/__init__.py": "", "report/rows.py": "from src.run.errors import UserError\n",
             "data/__init__.py": "", "data/tree.py": "from src.run.errors import UserError\n",
             "models/__init__.py": "", "models/module.py": ""}
    src = _tree(tmp_path, files)
    assert violations(src, allowed_imports()) == []
    (src / importer).write_text(line + "\n")
    found = violations(src, allowed_imports())
    assert len(found) == 1 and found[0].startswith("src." + importer[:-3].replace("/", ".") + " imports "), found


def test_a_module_no_row_covers_is_found(tmp_path):
    src = _tree(tmp_path, {"__init__.py": "", "tuner/__init__.py": "", "tuner/search.py": ""})
    assert violations(src, allowed_imports()) == [
        "src.tuner: no row of the import table in docs/development.md covers it",
        "src.tuner.search: no row of the import table in docs/development.md covers it"]


def test_a_planted_circle_is_found(tmp_path):
    src = _tree(tmp_path, {"__init__.py": "", "report/__init__.py": "", "report/runs.py": "from src.report.settings import X\n",
                           "report/settings.py": "def f():\n    from src.report.runs import Run\n",
                           "report/rows.py": "from src.report import runs\n"})
    assert circles(src) == [["src.report.runs", "src.report.settings"]]
