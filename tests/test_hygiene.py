"""House rules that keep the suite true on any machine."""
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
