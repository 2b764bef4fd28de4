"""Issue 36 §6: the commands that train nothing import neither torch nor Lightning (nor scipy for the report),
so they answer in about a second (bench/startup.py measures it; no timing is asserted here)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pytorch_lightning", "scipy")
PROBE = ("import atexit, runpy, sys\n"
         "atexit.register(lambda: print('LOADED', [m for m in {heavy!r} if m in sys.modules], file=sys.stderr))\n"
         "sys.argv = {argv!r}\n"
         "runpy.run_module({module!r}, run_name='__main__')\n")


def loaded(module: str, *args: str) -> str:
    code = PROBE.format(heavy=HEAVY, argv=[module, *args], module=module)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    return next(line for line in done.stderr.splitlines() if line.startswith("LOADED"))


@pytest.mark.parametrize("module, args", [
    ("src.train", ["--cfg", "job"]),
    ("src.train", ["seed=abc"]),  # a config error Hydra raises while composing
    ("src.report", ["--help"]),
])
def test_commands_that_train_nothing_import_no_torch_and_no_lightning(module, args):
    assert loaded(module, *args) == "LOADED []"


def test_importing_the_entry_point_imports_no_torch():
    code = f"import sys, src.train; print([m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "[]", done.stderr
