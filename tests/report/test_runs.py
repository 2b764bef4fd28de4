"""src.report.runs on hand-made sweep dirs: runs that cannot be counted, settings and Hydra's exclusions, module shape."""
import ast
import json
from pathlib import Path

import pytest
import yaml

from src.report.tables import group_runs, load_runs, main, table_rows
from src.report.runs import GROUP_KEYS, RUN_ONLY_FALLBACK, run_only_keys
from src.report.settings import RESULT_KEYS
from helpers import write_run

SRC = Path(__file__).resolve().parents[2] / "src"


def _hydra_yaml(run: Path, exclude_keys: list[str]) -> None:
    hydra = {"hydra": {"job": {"config": {"override_dirname": {"exclude_keys": exclude_keys}}}}}
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))


def test_corrupt_and_incomplete_runs_are_listed_not_counted(tmp_path, capsys):
    sweep = tmp_path / "s"
    write_run(sweep, "good", dataset="digits", case="case1", seed=0, test_error=2.0)
    bad = {"bad_json": b"{trunc", "not_object": b"[1, 2]", "binary": b"\xff\xfe\x00\x81"}
    for name, content in bad.items():
        (sweep / name).mkdir(parents=True)
        (sweep / name / "metrics.json").write_bytes(content)
    (write_run(sweep, "bad_config", dataset="digits", case="case1", seed=1, test_error=2.0)
     / ".hydra" / "config.yaml").write_text("model: [unclosed\n")
    no_depth = write_run(sweep, "no_depth", dataset="digits", case="case1", seed=2, test_error=2.0)
    (no_depth / "metrics.json").write_text(json.dumps({"status": "finished", "dataset": "digits", "seed": 2,
                                                       "test_error": 2.0}))
    write_run(sweep, "no_dataset", case="case1", seed=3, test_error=2.0)
    write_run(sweep, "no_error", dataset="digits", case="case1", seed=4)

    assert main([str(sweep)]) == 0
    rows = table_rows(group_runs(load_runs([sweep])))
    assert [(r["dataset"], r["case"], r["n"], r["seeds"]) for r in rows] == [("digits", "case1", 1, "0")]
    md = (sweep / "table.md").read_text()
    listed = md.split("Runs not counted:")[1]
    for name, why in [("bad_json", "cannot read metrics.json: Expecting"), ("not_object", "holds no JSON object"),
                      ("binary", "cannot read metrics.json"), ("bad_config", "cannot read .hydra/config.yaml: expected ',' or ']'"),
                      ("no_depth", "(finished): metrics.json has no depth"),
                      ("no_dataset", "has no dataset"), ("no_error", "has no numeric test_error")]:
        line = next(line for line in listed.splitlines() if f"{sweep / name}`" in line)
        assert why in line and line.count("\n") == 0
    assert "good" not in listed
    assert capsys.readouterr().err == ""


def test_a_sweep_of_only_corrupt_runs_still_reports(tmp_path):
    (tmp_path / "s" / "job").mkdir(parents=True)
    (tmp_path / "s" / "job" / "metrics.json").write_text("{trunc")
    assert main([str(tmp_path / "s")]) == 0
    assert "cannot read metrics.json" in (tmp_path / "s" / "table.md").read_text()
    assert (tmp_path / "s" / "table.csv").read_text().startswith("dataset,")


def test_run_only_keys_are_read_from_each_runs_hydra_yaml(tmp_path):
    sweep = tmp_path / "s"
    # optimizer.lr is a setting under the built-in list, but these runs' Hydra said it only names how to run.
    for seed, lr in ((0, 1.0), (1, 0.1)):
        run = write_run(sweep, f"cfg{seed}", ["case=case1", f"seed={seed}", f"optimizer.lr={lr}"], config=True,
                        dataset="digits", case="case1", seed=seed, test_error=2.0)
        _hydra_yaml(run, ["experiment", "optimizer.lr"])
        # Without .hydra/config.yaml: the command-line overrides, filtered by the same list.
        run = write_run(sweep, f"cli{seed}", ["case=case2", f"seed={seed}", f"optimizer.lr={lr}"],
                        dataset="digits", case="case2", seed=seed, test_error=3.0)
        _hydra_yaml(run, ["optimizer.lr"])
    write_run(sweep, "old", ["case=case2", "seed=2", "optimizer.lr=0.1"], dataset="digits", case="case2", seed=2,
              test_error=3.0)
    assert run_only_keys(sweep / "cfg0") == {"experiment", "optimizer.lr"}
    assert run_only_keys(sweep / "old") == RUN_ONLY_FALLBACK and "seed" in GROUP_KEYS
    rows = table_rows(group_runs(load_runs([sweep])))
    assert [(r["case"], r["settings"], r["n"]) for r in rows] == [
        ("case1", "", 2), ("case2", "", 2), ("case2", "optimizer.lr=0.1", 1)]


def test_figures_and_runs_never_import_report():
    for name in ("figures.py", "runs.py"):
        tree = ast.parse((SRC / "report" / name).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
            {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "src.report.tables" not in imported, name
    for path in SRC.rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 310, path.name


@pytest.mark.parametrize("status", ["running", "failed"])
def test_unfinished_runs_without_dataset_are_not_problems(tmp_path, status):
    sweep = tmp_path / "s"
    write_run(sweep, "a", dataset="digits", case="case1", seed=0, test_error=2.0)
    write_run(sweep, "b", status=status, case="case1", seed=1)
    runs = load_runs([sweep])
    assert [r.problem for r in runs] == [None, None]


def test_the_run_only_fallback_is_todays_list_of_conf_config_yaml():
    config = yaml.safe_load((SRC.parent / "conf" / "config.yaml").read_text())
    exclude = config["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"]
    assert RUN_ONLY_FALLBACK == frozenset(exclude) - RESULT_KEYS
