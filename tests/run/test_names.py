"""Issue 36 §8: names and small inconsistencies (a typo'd option, run dir names, history epochs)."""
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import compose_cfg

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("override, first", [
    ("method=focl", "error: method=focl is not an option of method/ (options: dks, haframe, hal, "),
    ("experiment=tabel2_mnist", "error: experiment=tabel2_mnist is not an option of experiment/ "
                                "(did you mean experiment=table2_mnist? options: "),
])
def test_an_unknown_option_is_one_line_with_a_guess_or_the_options(override, first):
    done = subprocess.run([sys.executable, "-m", "src.train", override], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith(first), done.stderr
    assert "base_" not in lines[0]


def _run_dir(*overrides: str) -> str:
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from helpers import CONF
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # ${now:} needs no more; the name is the part after the time
    return str(cfg.hydra.run.dir).split("_", 2)[2]


def test_a_run_dir_names_the_method_and_a_depth_that_is_not_the_datasets():
    assert _run_dir("method=hxe") == "digits_hxe_case1_seed0"
    assert _run_dir("case=baseline", "seed=3") == "digits_hal_baseline_seed3"
    assert _run_dir("depth=16") == "digits_hal_case1_depth16_seed0"
    assert _run_dir("dataset=svhn", "depth=28") == "svhn_hal_case1_seed0"  # svhn's own depth: not named


def test_history_counts_epochs_from_1_like_the_console(run_train, tmp_path):
    import csv

    run_train("trainer.max_epochs=2", run_dir=tmp_path / "h")
    with open(tmp_path / "h" / "history.csv", newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]


def test_the_report_reads_histories_counted_from_1_and_from_0_alike(tmp_path):
    from src.report.figures import read_history

    for name, first in (("new", 1), ("old", 0)):  # old: history.csv written before issue 36
        (tmp_path / name).mkdir()
        (tmp_path / name / "history.csv").write_text(f"epoch,train/loss\n{first},2.0\n{first + 1},1.0\n")
    new, old = read_history(tmp_path / "new"), read_history(tmp_path / "old")
    assert new["train/loss"].tolist() == old["train/loss"].tolist() == [2.0, 1.0]
