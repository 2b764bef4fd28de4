"""House rules that keep the suite true on any machine."""
import ast
import io
import re
import tokenize
from pathlib import Path

TESTS = Path(__file__).resolve().parent
MARK = "hand-derived"


def significant_digits(literal: str) -> int:
    mantissa = re.split(r"[eE]", literal.replace("_", ""))[0]
    return len(mantissa.replace(".", "").lstrip("0"))


def long_floats(source: str) -> list[tuple[int, str]]:
    """(line, literal) of every float literal with more than 6 significant digits on a line not marked
    ``# hand-derived``: a number recorded from a run on one CPU, which another CPU does not reproduce."""
    lines = source.splitlines()
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type != tokenize.NUMBER or not re.search(r"[.eE]", token.string) or token.string.startswith("0x"):
            continue
        line = lines[token.start[0] - 1]
        if significant_digits(token.string) > 6 and MARK not in line:
            found.append((token.start[0], token.string))
    return found


def test_the_guard_finds_long_floats_and_honours_the_mark():
    assert long_floats("x = 11.11111068725586\ny = 0.5\nz = 1e-6\n") == [(1, "11.11111068725586")]  # hand-written example
    assert long_floats("x = 0.3477937  # hand-derived: 1 - 6·(Σd²)/(n³ - n)\n") == []
    assert long_floats("x = 1_000_003\ny = 123.4567\n") == [(2, "123.4567")]
    assert significant_digits("0.000123") == 3 and significant_digits("2.5e-10") == 2


def test_no_test_file_pins_a_long_float():
    offenders = {path.name: found for path in sorted(TESTS.rglob("*.py"))
                 if path.name != Path(__file__).name and (found := long_floats(path.read_text()))}
    assert not offenders, f"float literals with > 6 significant digits (compare two runs, or mark the line " \
                          f"'# {MARK}'): {offenders}"


# A test trains when it calls one of these (tests/conftest.py's run_train, src.train's train / build, the CLI).
TRAINS = {"run_train", "train", "build", "raw_loop"}


def _trains(function) -> bool:
    for node in ast.walk(function):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name in TRAINS:
                return True
        if isinstance(node, ast.Constant) and node.value == "src.train":
            return True
    return False


def _float_literals(node) -> bool:
    """Whether ``node`` is, or holds (in a list, tuple, dict), a float literal such as 11.1111 or -0.5."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, float)
    if isinstance(node, ast.UnaryOp):
        return _float_literals(node.operand)
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return any(_float_literals(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return any(_float_literals(v) for v in node.values)
    return False


def pinned_results(source: str) -> list[tuple[int, str]]:
    """(line, test) of every comparison with a float literal (``== 0.5``, ``pytest.approx(11.1111)``) inside a test
    that trains, on a line not marked ``# hand-derived``: a training result pinned at any precision, which another
    CPU, thread count or library version does not reproduce. Compare two runs or a hand rescoring instead."""
    lines, found = source.splitlines(), []
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, ast.FunctionDef) or not function.name.startswith("test") or not _trains(function):
            continue
        for node in ast.walk(function):
            pinned = False
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
                pinned = name == "approx" and any(_float_literals(a) for a in node.args[:1])
            elif isinstance(node, ast.Compare):
                pinned = any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops) and \
                    any(_float_literals(side) for side in [node.left, *node.comparators])
            if pinned and MARK not in lines[node.lineno - 1]:
                found.append((node.lineno, function.name))
    return sorted(set(found))


def test_the_guard_finds_pinned_results_in_tests_that_train():
    trains = "def test_a(run_train):\n    record = run_train()\n    assert record['e'] == pytest.approx(11.1111)\n"
    assert pinned_results(trains) == [(3, "test_a")]
    assert pinned_results(trains.replace("11.1111)", "11.1111)  # hand-derived: 1/9")) == []
    assert pinned_results("def test_b(run_train):\n    r = run_train()\n    assert r['x'] == -0.5\n") == [(3, "test_b")]
    assert pinned_results("def test_c():\n    assert f(2) == pytest.approx(0.325)\n") == []  # trains nothing
    assert pinned_results("def test_d(run_train):\n    assert run_train()['status'] == 'finished' and 1 == 1\n") == []


def test_no_test_that_trains_pins_its_result():
    offenders = {path.name: found for path in sorted(TESTS.rglob("*.py"))
                 if path.name != Path(__file__).name and (found := pinned_results(path.read_text()))}
    assert not offenders, f"tests that train compare with a float literal (compare two runs or a hand rescoring, " \
                          f"or mark a hand-derived value '# {MARK}'): {offenders}"
