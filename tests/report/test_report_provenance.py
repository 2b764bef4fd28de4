"""src.report flags a comparison whose runs mix provenance (src.report.provenance); --strict refuses it."""
import csv
import html
import subprocess

import pytest
from omegaconf import OmegaConf

from helpers import FAST, compose_cfg, write_run
from src.report.provenance import FLAG
from src.report.tables import main

COMMIT, OTHER = "1" * 40, "2" * 40
ENV = {"versions": {"python": "3.11.7", "torch": "2.14.1", "cuda": None, "cudnn": None, "numpy": "2.4.6"},
       "cpu": "AMD EPYC 7B13", "gpu": None, "threads": 1}


def _provenance(commit=COMMIT, sha=None, **env):
    return {"git_commit": commit, "dirty": sha is not None,
            "code_patch": {"file": "code.patch", "sha256": sha} if sha else None, **ENV, **env}


def _sweep(sweep, rerun=None):
    """Baseline and case1, seeds 0-2, all under one code and environment; ``rerun``: case1 seed 2's record
    replaced by one with these provenance fields (that seed rerun after a change)."""
    for case, errors in (("baseline", [1.0, 1.1, 0.9]), ("case1", [0.5, 0.65, 0.42])):
        for seed, err in enumerate(errors):
            fields = _provenance(**(rerun or {})) if (case, seed) == ("case1", 2) else _provenance()
            write_run(sweep, f"case={case},seed={seed}", dataset="mnist", case=case, seed=seed, test_error=err,
                      **fields)
    return sweep


def _rows(out):
    with open(out / "table.csv", newline="") as f:
        return {r["case"]: r for r in csv.DictReader(f)}


def test_one_uniform_sweep_has_no_mark_and_passes_strict(tmp_path, capsys):
    sweep = _sweep(tmp_path / "sweep")
    assert main([str(sweep), "--strict"]) == 0
    assert FLAG not in (sweep / "table.md").read_text() and FLAG not in (sweep / "report.html").read_text()
    assert all(r["ran_under"] == "" for r in _rows(sweep).values())


@pytest.mark.parametrize("rerun, what", [
    ({"commit": OTHER}, ["commit 1111111111", "commit 2222222222"]),
    ({"sha": "ab" * 32}, ["commit 1111111111", "commit 1111111111 + patch abababab"]),
    ({"versions": {**ENV["versions"], "torch": "2.13.0"}}, ["torch 2.14.1", "torch 2.13.0"]),
    ({"versions": {**ENV["versions"], "numpy": "2.3.0"}}, ["numpy 2.4.6", "numpy 2.3.0"]),
    ({"threads": 2}, ["CPU AMD EPYC 7B13 × 1 threads", "CPU AMD EPYC 7B13 × 2 threads"]),
    ({"cpu": "Intel Xeon"}, ["CPU AMD EPYC 7B13 × 1 threads", "CPU Intel Xeon × 1 threads"]),
])
def test_one_seed_rerun_under_other_code_marks_the_row_in_table_md_and_report_html(tmp_path, capsys, rerun, what):
    sweep = _sweep(tmp_path / "sweep", rerun)
    assert main([str(sweep)]) == 0
    rows = _rows(sweep)
    assert FLAG not in rows["baseline"]["flags"] and rows["baseline"]["ran_under"] == ""
    assert FLAG in rows["case1"]["flags"]
    # One line per set of runs that ran alike, naming only what differs: the 5 runs of one kind, then seed 2.
    lines = [f"baseline seeds 0 1 2, case1 seeds 0 1: {what[0]}", f"case1 seed 2: {what[1]}"]
    assert rows["case1"]["ran_under"].split(" | ") == lines
    md = (sweep / "table.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| mnist | 10 | case1 |"))
    assert FLAG in row
    assert f"- mnist 10 case1: Δ p=" in md and f"; {FLAG}, what ran under what:\n  - {lines[0]}\n  - {lines[1]}\n" in md
    page = (sweep / "report.html").read_text()
    cells = next(line for line in page.splitlines() if line.startswith("<tr><td>mnist</td><td>10</td><td>case1</td>"))
    assert FLAG in cells
    assert f"<ul><li>{html.escape(lines[0])}</li><li>{html.escape(lines[1])}</li></ul>" in page


def test_strict_refuses_a_mixed_row_in_one_line_and_writes_nothing(tmp_path, capsys):
    sweep = _sweep(tmp_path / "sweep", {"commit": OTHER})
    assert main([str(sweep), "--strict"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --strict: 1 row mixes provenance") and "mnist 10 hal case1" in err[0]
    assert not (sweep / "table.md").exists() and not (sweep / "report.html").exists()


def test_a_record_older_than_provenance_beside_a_new_one_is_mixed(tmp_path, capsys):
    """Nothing says an old record ran like the others: "not recorded" is never taken as equal."""
    sweep = _sweep(tmp_path / "sweep")
    write_run(sweep, "case=case1,seed=3", dataset="mnist", case="case1", seed=3, test_error=0.5, git_commit=COMMIT)
    assert main([str(sweep)]) == 0
    assert "case1 seed 3: torch not recorded" in _rows(sweep)["case1"]["ran_under"]


@pytest.mark.slow  # five training runs: about 30 s under load
def test_a_real_sweep_with_one_seed_rerun_after_an_edit_is_marked(tmp_path, monkeypatch, capsys):
    """The done-when of issue 34, with src.train: baseline and case1 (seeds 0, 1) from a committed scratch repo,
    then case1 seed 1 rerun after an uncommitted edit there."""
    from src.run import provenance
    from src.train import train

    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "loss.py").write_text("weight = 1.0\n")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "first"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True)
    monkeypatch.setattr(provenance, "SOURCE", repo / "pkg")
    sweep = tmp_path / "sweep"

    def run(case, seed):
        run_dir = sweep / f"case={case},seed={seed}"
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        cfg = compose_cfg([*FAST, f"case={case}", f"seed={seed}"])
        OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
        train(cfg, run_dir)

    for case in ("baseline", "case1"):
        for seed in (0, 1):
            run(case, seed)
    assert main([str(sweep), "--strict"]) == 0  # one code, one machine: nothing to flag
    (repo / "pkg" / "loss.py").write_text("weight = 2.0\n")
    (sweep / "case=case1,seed=1" / "metrics.json").unlink()  # rerun that seed under the edited code
    run("case1", 1)
    assert main([str(sweep)]) == 0
    line = next(line for line in (sweep / "table.md").read_text().splitlines() if line.startswith("| digits |")
                and "| case1 |" in line)
    assert FLAG in line and FLAG in (sweep / "report.html").read_text()
    assert "case1 seed 1: commit " in _rows(sweep)["case1"]["ran_under"]
    capsys.readouterr()
    assert main([str(sweep), "--strict"]) == 1
    assert "1 row mixes provenance" in capsys.readouterr().err
