"""Issue 36 §4: one number per key, each key's protocol documented, eval.json's own time under its own name."""
import json
import re
from pathlib import Path

from helpers import write_run
from src.report.runs import load_runs

ROOT = Path(__file__).resolve().parents[1]


def documented_keys() -> set[str]:
    text = (ROOT / "docs" / "configuration.md").read_text()
    rows = [line for line in text.splitlines() if line.strip().startswith("| `")]
    return {k for row in rows for k in re.findall(r"`([a-z0-9_]+)`", row.split("|")[1])}


def test_every_key_of_a_run_is_one_number_and_documented_with_its_protocol(run_train):
    record = run_train()
    assert record["test_error"] == record["test_error_oracle"]  # one number: not float32 beside float64
    assert record["test_acc"] == 100 - record["test_error_oracle"]
    assert record["metrics_protocol"] == "inferred"  # what top1_acc is the accuracy of
    assert set(record) - documented_keys() == set()


def test_an_old_eval_json_keeps_the_runs_duration(tmp_path):
    run = write_run(tmp_path / "s", "r", dataset="digits", case="case1", seed=0, test_error=2.0, duration_s=100.0)
    (run / "eval.json").write_text(json.dumps({"test_error": 1.5, "duration_s": 3.0}))  # before issue 36
    [loaded] = load_runs([tmp_path / "s"])
    assert loaded.record["duration_s"] == 100.0 and loaded.record["eval_duration_s"] == 3.0
    assert loaded.record["test_error"] == 1.5
