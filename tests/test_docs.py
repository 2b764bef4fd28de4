"""The docs hold: every relative link of README.md and docs/*.md resolves, and every documented command
works. ``python -m src.train`` lines compose with the repo's configs (a multirun: its first job);
``src.report`` / ``src.discover`` / any other ``src.*`` line runs in-process on a small sweep and run made
here; ``make`` lines name real targets and pass ``make -n`` (the ``src.*`` commands they expand to are
checked in turn). A line marked ``# needs: gpu|download|slurm`` is skipped, with the line as the reason
(``-ra`` lists them); a marked ``src.train`` line is still composed, which needs none of those."""
import functools
import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from doc_commands import (NEEDS, ROOT, DocCommand, anchors, broken_links, collect, compose_train, doc_files,
                          github_anchor, parse_command)
from helpers import FAST, compose_cfg
from src.run.config import check_config
from src.run.errors import ConfigError
from src.tuning.tuner import check_tune
from helpers import write_run

COMMANDS = collect()
COMPOSED = ("src.train", "src.tune")  # Hydra apps: a documented line is composed, not run
RUN = "outputs/runs/fixture_run"
PLACEHOLDERS = {"<run>": "fixture_run", "RUN_DIR": RUN, "SWEEP_DIR": "outputs/sweeps/fixture"}
# The fixture run's class vectors point in three directions: discovery with --k 3 must find these groups.
VECTOR_GROUPS = [0, 0, 1, 1, 1, 2, 2, 2, 2, 0]


def test_the_readme_is_short_and_every_page_is_linked_from_it():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for page in doc_files()[1:]:
        assert f"(docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.name)
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


def test_anchors_are_made_as_github_makes_them(tmp_path):
    assert github_anchor("`eval` options (`conf/config.yaml`)") == "eval-options-confconfigyaml"  # hand-derived
    assert github_anchor("The paper's experiments") == "the-papers-experiments"
    assert github_anchor("Hierarchy metrics (test set, in %)") == "hierarchy-metrics-test-set-in-"
    assert github_anchor("Scale out: GPU, DDP, SLURM") == "scale-out-gpu-ddp-slurm"
    page = tmp_path / "b.md"
    page.write_text("# B\n## There\n## There\n```\n## not a heading\n```\n")
    assert anchors(page) == {"b", "there", "there-1"}


def test_a_broken_link_or_anchor_is_reported(tmp_path):
    (tmp_path / "b.md").write_text("## There\n")
    page = tmp_path / "a.md"
    page.write_text("[ok](b.md#there) [gone](c.md) [bad](b.md#nowhere) [self](#top) [web](https://x.org/y)\n"
                    "`[code](x.md)`\n```\n[fenced](y.md)\n```\n# Top\nsee [a link\nover two lines](d.md)\n")
    assert broken_links(page) == ["a.md:1: c.md (no such file)",
                                  "a.md:1: b.md#nowhere (no heading with anchor #nowhere in b.md)",
                                  "a.md:7: d.md (no such file)"]


def test_commands_are_collected_from_fenced_blocks_only(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("python -m src.train outside=1\n```bash\n"
                    "OMP_NUM_THREADS=1 .venv/bin/python -m src.train -m experiment=smoke \\\n"
                    "    seed=1   # needs: gpu, slurm\n"
                    "echo python -m src.train\n"
                    'make report ARGS="a b"  # a comment\n'
                    "python -m src.report x && python -m src.discover y --k 3\n```\n")
    got = [(c.line, c.program, c.args, c.needs) for c in collect([page], root=tmp_path)]
    assert got == [(3, "src.train", ["-m", "experiment=smoke", "seed=1"], ("gpu", "slurm")),
                   (6, "make", ["report", "ARGS=a b"], ()),
                   (7, "src.report", ["x"], ()), (7, "src.discover", ["y", "--k", "3"], ())]
    assert parse_command("ls -la") is None


def test_a_multirun_composes_as_its_first_job():
    cfg = compose_train(["-m", "experiment=table2_mnist", "seed=3"])
    assert (cfg.dataset.name, cfg.case.name, cfg.seed, cfg.trainer.max_epochs) == ("mnist", "baseline", 3, 250)
    cfg = compose_train(["-m", "experiment=methods_mnist", "arm=hal_case4,dks", "seed=range(2,4)"])
    assert (cfg.method.name, cfg.case.name, cfg.seed) == ("hal", "case4", 2)
    cfg = compose_train(["--multirun", "case=case2,case1", "depth=16,10", "hydra.sweep.dir=outputs/sweeps/x"])
    assert (cfg.case.name, cfg.depth, cfg.model.depth) == ("case2", 16, 16) and "hydra" not in cfg
    assert compose_train(["--cfg", "job", "depth=22"]).depth == 22


@pytest.mark.parametrize("args", [["case=case9"], ["trainer.max_epochz=3"], ["seed=0,1"], ["seed=abc"],
                                  ["hydra.launcher.partition=gpu"], ["-m", "experiment=table2_mnist", "case=case9"]])
def test_an_override_that_does_not_compose_fails(args):
    with pytest.raises(ConfigCompositionException):
        compose_train(args)


def test_a_value_out_of_range_fails(doc_workspace):
    with pytest.raises(ConfigError, match="optimizer.lr must be > 0"):
        check(DocCommand("x.md", 1, "", "src.train", ["optimizer.lr=-1"]), doc_workspace)


def test_a_documented_module_that_does_not_exist_is_a_failure(doc_workspace):
    with pytest.raises(pytest.fail.Exception, match=r"src\.nosuch is documented .* does not exist"):
        check(DocCommand("x.md", 1, "python -m src.nosuch x", "src.nosuch", ["x"]), doc_workspace)


def test_a_make_target_that_does_not_exist_is_a_failure(doc_workspace):
    with pytest.raises(AssertionError, match="make nosuch: no such target"):
        check(DocCommand("x.md", 1, "make nosuch", "make", ["nosuch"]), doc_workspace)


def test_every_marker_names_what_this_machine_lacks():
    for command in COMMANDS:
        assert set(command.needs) <= NEEDS, f"{command.where}: needs one of {sorted(NEEDS)}, got {command.needs}"


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_documented_command(command, doc_workspace):
    if command.needs:
        if command.program in COMPOSED:  # composing needs no GPU, download or cluster
            check(command, doc_workspace)
        pytest.skip(f"needs {', '.join(command.needs)}: {command.where}: {command.text}")
    check(command, doc_workspace)


# --- running a documented command ---------------------------------------------------------------------

@pytest.fixture
def doc_workspace(tmp_path, monkeypatch):
    """A repo-shaped dir for the documented lines: outputs/sweeps/fixture (a finished mnist sweep, test
    error baseline 2.0 / 3.0 and case1 1.0 / 1.5 over seeds 0 and 1) and outputs/runs/fixture_run (a finished
    digits run with the hierarchy.npz that discovery reads)."""
    sweep = tmp_path / "outputs" / "sweeps" / "fixture"
    for case, errors in (("baseline", (2.0, 3.0)), ("case1", (1.0, 1.5))):
        for seed, error in enumerate(errors):
            write_run(sweep, f"case={case},seed={seed}", (f"case={case}", f"seed={seed}"), dataset="mnist",
                      case=case, seed=seed, test_error=error)
    run = tmp_path / RUN
    run.mkdir(parents=True)
    (run / "metrics.json").write_text('{"status": "finished", "dataset": "digits", "case": "case1"}')
    groups = np.array(VECTOR_GROUPS)
    vectors = np.eye(3)[groups] * 5 + np.random.default_rng(0).normal(scale=0.3, size=(10, 3))
    confusion = (groups[:, None] == groups[None, :]) * 3 + np.eye(10, dtype=int) * 20
    np.savez(run / "hierarchy.npz", val_confusion=confusion, val_soft_confusion=confusion.astype(np.float32),
             class_vectors=vectors.astype(np.float32), class_names=np.array([str(d) for d in range(10)]),
             superclasses=np.array([1] * 5 + [0] * 5), dataset=np.array("digits"), case=np.array("case1"),
             protocol=np.array("inferred (softmax)"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def fill(word: str, command: DocCommand) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        word = word.replace(placeholder, value)
    if re.search(r"<[^<>]+>", word):
        pytest.fail(f"{command.where}: no fixture value for the placeholder in {word!r}; add one to PLACEHOLDERS")
    return word


def check(command: DocCommand, workspace: Path) -> None:
    args = [fill(a, command) for a in command.args]
    if command.program == "make":
        check_make(command, args, workspace)
    elif command.program in COMPOSED:
        cfg = compose_train(args)
        check_config(cfg)
        if command.program == "src.tune":  # a study takes minutes: its lines compose, tests/tuning/ runs them
            check_tune(cfg)
    else:
        run_module(command, args, workspace)


def check_make(command: DocCommand, args: list[str], workspace: Path) -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z0-9_-]+):(?!=)", makefile, flags=re.M))
    for target in (a for a in args if "=" not in a and not a.startswith("-")):
        assert target in targets, f"{command.where}: make {target}: no such target in the Makefile"
    dry = subprocess.run(["make", "-n", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert dry.returncode == 0, f"{command.where}: make -n {shlex.join(args)}: {dry.stderr}"
    for line in dry.stdout.splitlines():  # what the target runs, checked like a documented line
        parsed = parse_command(line)
        if parsed and parsed[0] != "make":
            check(DocCommand(command.file, command.line, line, *parsed[:2]), workspace)


def run_module(command: DocCommand, args: list[str], workspace: Path) -> None:
    """``python -m src.X ARGS`` as ``src.X.main(ARGS)`` in the workspace: exit status 0, and its output."""
    name = command.program
    if importlib.util.find_spec(name) is None:
        pytest.fail(f"{command.where}: {name} is documented ({command.text!r}), but src/{name[4:]}(.py) does not exist")
    # A package runs its __main__ (python -m src.report), a module itself.
    module = importlib.import_module(f"{name}.__main__" if importlib.util.find_spec(name).submodule_search_locations else name)
    for path in paths(args):  # a sweep (for the report) or a run the docs name: a copy of the fixture's
        if not Path(path).exists():
            source = trained_run() if name == "src.eval" else \
                workspace / (PLACEHOLDERS["SWEEP_DIR"] if name == "src.report" else RUN)
            shutil.copytree(source, path)
    try:
        status = module.main(args)
    except SystemExit as e:
        status = e.code
    assert status in (0, None), f"{command.where}: {command.text} exited with {status}"
    if name == "src.report":
        check_report(args)
    elif name == "src.discover":
        check_discovery(args)
    elif name == "src.eval":
        check_eval(args)


@functools.cache
def trained_run() -> Path:
    """A real finished digits run with its final checkpoint and saved config, for the `src.eval` lines:
    trained once per test session (two training batches)."""
    from src.train import train

    run = Path(tempfile.mkdtemp()) / "run"
    run.mkdir()
    cfg = compose_cfg([*FAST, "trainer.enable_checkpointing=true", "+trainer.limit_train_batches=2"])
    train(cfg, run)
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    return run


def check_eval(args: list[str]) -> None:
    run = Path(paths(args)[0])
    record, rescored = (json.loads((run / name).read_text()) for name in ("metrics.json", "eval.json"))
    if not [a for a in args if "=" in a and not a.startswith("outputs/")]:  # no override: the same test pass
        assert rescored["test_error"] == record["test_error"]
    if "--update" in args:
        assert record["status"] == "finished" and all(k in record for k in rescored)


def paths(args: list[str]) -> list[str]:
    """The sweep or run dirs among the arguments: those under outputs/ that are no option's value."""
    words, out = iter(args), []
    for word in words:
        if word in ("--out",):
            next(words, None)
        elif word.startswith("outputs/"):
            out.append(word)
    return out


def option(args: list[str], name: str):
    return args[args.index(name) + 1] if name in args else None


def check_report(args: list[str]) -> None:
    sweeps = paths(args)
    out = Path(option(args, "--out") or (sweeps[0] if len(sweeps) == 1 else os.path.commonpath(sweeps)))
    table = (out / "table.md").read_text()
    assert "2.50 ±" in table and "1.25 ±" in table, table  # the means of the fixture's test errors


def check_discovery(args: list[str]) -> None:
    run, k = Path(paths(args)[0]), int(option(args, "--k"))
    out = Path(option(args, "--out") or run / "discovered")
    names = [str(d) for d in range(10)]
    chosen = option(args, "--method")
    for method in [chosen] if chosen not in (None, "both") else ["confusion", "vectors"]:
        mapping = yaml.safe_load((out / f"{method}_k{k}.yaml").read_text())
        assert len(mapping) == k and sorted(sum(mapping.values(), [])) == names
        if method == "vectors" and k == 3:
            assert sorted(mapping.values()) == sorted([n for n, g in zip(names, VECTOR_GROUPS) if g == s]
                                                      for s in range(3))
