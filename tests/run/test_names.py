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
