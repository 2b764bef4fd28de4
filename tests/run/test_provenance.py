"""src.run.provenance: a run records its commit, dirty flag, code.patch and versions; resume says when code moved.

The code under test is pointed at a scratch git repository (``provenance.SOURCE``): an uncommitted edit is made
there, never in the project's own work tree."""
import hashlib
import json
import logging
import subprocess
from importlib import metadata

import pytest
import torch

from helpers import FAST, compose_cfg
from src.run import provenance as prov


def git(repo, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A committed repository with a package dir, which provenance reads as the running code."""
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "model.py").write_text("depth = 20\n")
    (repo / ".gitignore").write_text("outputs/\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    monkeypatch.setattr(prov, "SOURCE", repo / "pkg")
    return repo


def test_a_clean_tree_records_its_commit_and_no_patch(repo, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / prov.PATCH).write_text("stale")  # a resumed run's patch from a dirty attempt: gone once clean
    record = prov.provenance(run)
    assert record["git_commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert record["dirty"] is False and record["code_patch"] is None
    assert not (run / prov.PATCH).exists()


def test_an_uncommitted_edit_is_dirty_and_its_patch_rebuilds_the_tree(repo, tmp_path):
    (repo / "pkg" / "model.py").write_text("depth = 28\n")  # an edit
    (repo / "pkg" / "new_method.py").write_text("LOSS = 1\n")  # a file not yet added: code too
    (repo / "outputs").mkdir()
    (repo / "outputs" / "big.bin").write_bytes(b"x" * 1000)  # ignored: not code
    index_before = (repo / ".git" / "index").read_bytes()
    run = tmp_path / "run"
    run.mkdir()
    record = prov.provenance(run)
    patch = (run / prov.PATCH).read_bytes()
    assert record["dirty"] is True
    assert record["code_patch"] == {"file": prov.PATCH, "sha256": hashlib.sha256(patch).hexdigest()}
    assert b"outputs/big.bin" not in patch
    assert (repo / ".git" / "index").read_bytes() == index_before  # the user's index untouched
    assert "?? pkg/new_method.py" in git(repo, "status", "--porcelain")  # still untracked: nothing was added
    # The commit plus the patch is the tree the run ran: a clean clone with the patch applied has both files.
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    git(clone, "checkout", "-q", record["git_commit"])
    git(clone, "apply", str(run / prov.PATCH))
    assert (clone / "pkg" / "model.py").read_text() == "depth = 28\n"
    assert (clone / "pkg" / "new_method.py").read_text() == "LOSS = 1\n"


def test_without_git_the_fields_are_null(tmp_path, monkeypatch):
    (tmp_path / "pkg").mkdir()
    monkeypatch.setattr(prov, "SOURCE", tmp_path / "pkg")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no repository above tmp_path counts
    record = prov.provenance(tmp_path)
    assert (record["git_commit"], record["dirty"], record["code_patch"]) == (None, None, None)
    assert not (tmp_path / prov.PATCH).exists()


def test_code_in_an_ignored_dir_of_a_repository_is_not_that_repositorys(repo, monkeypatch, tmp_path):
    """A non-editable install in a venv inside a clone: the clone's commit is not the installed code's."""
    installed = repo / "outputs" / "site-packages" / "pkg"
    installed.mkdir(parents=True)
    monkeypatch.setattr(prov, "SOURCE", installed)
    assert prov.code_state() == (None, None)


def test_versions_are_read_not_guessed():
    found = prov.versions()
    assert found["torch"] == metadata.version("torch") and found["numpy"] == metadata.version("numpy")
    assert found["lightning"] == metadata.version("pytorch-lightning")
    assert found["hydra"] == metadata.version("hydra-core") and found["optuna"] == metadata.version("optuna")
    assert found["cuda"] == torch.version.cuda  # None on a CPU build: null, not a guess
    assert set(found) == {"python", *prov.PACKAGES, "cuda", "cudnn"}
    assert prov.gpu_name() == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)


def test_a_run_with_an_uncommitted_edit_records_it(repo, tmp_path):
    """The done-when of issue 34: src.train's metrics.json says dirty, names code.patch and its hash, and every
    version; json-serialisable as written."""
    from src.train import train

    (repo / "pkg" / "model.py").write_text("depth = 28\n")
    run = tmp_path / "run"
    run.mkdir()
    train(compose_cfg([*FAST, "case=case1"]), run)
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "finished" and record["dirty"] is True
    assert record["git_commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert record["code_patch"]["sha256"] == hashlib.sha256((run / "code.patch").read_bytes()).hexdigest()
    assert b"+depth = 28" in (run / "code.patch").read_bytes()
    assert record["versions"]["torch"] == metadata.version("torch") and record["cpu"] == prov.cpu_model()


def _record(commit="a" * 40, sha=None, torch_version="2.14.1"):
    return {"git_commit": commit, "dirty": sha is not None, "code_patch": {"file": "code.patch", "sha256": sha} if sha
            else None, "versions": {"torch": torch_version}}


@pytest.mark.parametrize("before, moved", [
    (_record(), False),
    (_record(commit="b" * 40), True),
    (_record(sha="f" * 64), True),
    (_record(torch_version="2.13.0"), True),
    ({"git_commit": "a" * 40}, False),  # a record older than the patch and versions: only the commit compared
    ({}, False),  # no record yet: nothing to compare
])
def test_code_moved_warns_in_one_line(before, moved, caplog, tmp_path):
    with caplog.at_level(logging.WARNING, logger=prov.__name__):
        assert prov.code_moved(before, _record(), "resuming", tmp_path) is moved
    assert len(caplog.records) == moved
    if moved:
        line = caplog.records[0].getMessage()
        assert "\n" not in line and prov.describe(before) in line and prov.describe(_record()) in line


def test_resuming_after_the_code_moved_warns_once_and_goes_on(tmp_path, caplog):
    from src.train import train

    run = tmp_path / "run"
    run.mkdir()
    overrides = [*FAST, "trainer.enable_checkpointing=true"]
    train(compose_cfg(overrides), run)
    record = json.loads((run / "metrics.json").read_text())
    record.update(status="interrupted", git_commit="0" * 40)  # killed, and the code checked out anew since
    (run / "metrics.json").write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING, logger=prov.__name__):
        resumed = train(compose_cfg([*overrides[1:], "trainer.max_epochs=2"]), run)
    warnings = [r.getMessage() for r in caplog.records if r.name == prov.__name__]
    assert len(warnings) == 1 and "commit 0000000000" in warnings[0] and warnings[0].startswith("resuming ")
    assert resumed["status"] == "finished" and resumed["resumed_at_epoch"] == 1
