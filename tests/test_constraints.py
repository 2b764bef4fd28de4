"""constraints.txt: an install that does not move. `make venv` (and so CI's `make test`) installs with it; it pins
every package a fresh install resolves, within pyproject.toml's ranges; this venv runs those versions."""
import re
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def pins(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line)
        assert match, f"constraints.txt: {line!r} is not name==version"
        found[canonicalize_name(match[1])] = match[2]
    return found


def project_requirements(extras=("dev",)) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + [d for e in extras for d in project["optional-dependencies"][e]]]


def unpinned(requirements: list[Requirement], pinned: dict[str, str]) -> list[str]:
    """The packages a fresh install would resolve that constraints.txt does not pin, or pins outside a range:
    the requirements and, through the installed metadata, the requirements of every pinned package."""
    problems, seen, todo = [], set(), [(r, "pyproject.toml") for r in requirements]
    while todo:
        requirement, by = todo.pop()
        name = canonicalize_name(requirement.name)
        env = {**default_environment(), "extra": ""}
        if requirement.marker is not None and not requirement.marker.evaluate(env):
            continue
        if name not in pinned:
            problems.append(f"{name} (required by {by}) is not pinned")
            continue
        if not requirement.specifier.contains(pinned[name], prereleases=True):
            problems.append(f"{name}=={pinned[name]} is outside {requirement.specifier} (required by {by})")
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [(Requirement(r), name) for r in requires]
    return problems


def test_constraints_pin_every_package_a_fresh_install_resolves_within_pyprojects_ranges():
    pinned = pins((ROOT / "constraints.txt").read_text())
    assert unpinned(project_requirements(), pinned) == [], "run `make lock` after changing pyproject.toml"


def test_the_check_catches_a_missing_pin_and_one_out_of_range():
    pinned = pins((ROOT / "constraints.txt").read_text())
    without_numpy = {k: v for k, v in pinned.items() if k != "numpy"}
    assert any(p.startswith("numpy (required by") for p in unpinned(project_requirements(), without_numpy))
    assert unpinned([Requirement("optuna>=99")], pinned) == [f"optuna=={pinned['optuna']} is outside >=99 (required by pyproject.toml)"]


def test_this_venv_runs_the_pinned_versions():
    """A green `make test` means the versions of constraints.txt: those of every requirement in pyproject.toml."""
    pinned = pins((ROOT / "constraints.txt").read_text())
    installed = {canonicalize_name(r.name): metadata.version(r.name) for r in project_requirements()}
    assert {n: v for n, v in installed.items() if v != pinned[n]} == {}, \
        "this venv differs from constraints.txt: reinstall it with `make venv`, or regenerate with `make lock`"


def test_make_venv_installs_with_the_constraints(tmp_path):
    """What `make venv` (and CI: .ci/run -> make test -> venv) runs in a new clone: pip -c constraints.txt."""
    commands = subprocess.run(["make", "-n", "-B", "venv", f"VENV={tmp_path / 'venv'}"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
    install = next(line for line in commands.splitlines() if " -e '.[dev]'" in line)
    assert "-c constraints.txt" in install
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    lock = subprocess.run(["make", "-n", "lock"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    assert "pip freeze --all --exclude-editable" in lock and "> constraints.txt.tmp" in lock
