"""Range checks on real composed configs, the typed schema against every dataset's config, and the
command line's one-line errors."""
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from src.run.config import check_config
from src.run.schema import Cifar10Config, Config, FileDatasetConfig, FolderConfig, SVHNConfig, TrainerConfig
from src.run.errors import ConfigError
from tests.conftest import compose_cfg


@pytest.mark.parametrize("dataset", ["digits", "mnist", "svhn", "cifar10"])
def test_the_shipped_configs_pass(dataset):
    check_config(compose_cfg([f"dataset={dataset}"]))


@pytest.mark.parametrize("override, key", [
    ("optimizer.lr=0", "optimizer.lr"), ("optimizer.lr=-0.1", "optimizer.lr"),
    ("optimizer.momentum=1.0", "optimizer.momentum"), ("optimizer.momentum=-0.5", "optimizer.momentum"),
    ("dataset.batch_size=0", "dataset.batch_size"), ("seed=-1", "seed"), (f"seed={2**32}", "seed"),
    ("trainer.max_epochs=0", "trainer.max_epochs"), ("model.depth=12", "model.depth"),
    ("model.depth=4", "model.depth"), ("depth=12", "depth"), ("divergence_factor=0", "divergence_factor"),
])
def test_a_value_out_of_range_is_one_line_naming_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        check_config(compose_cfg([override]))
    message = str(info.value)
    assert message.startswith(f"{key} must be ") and "\n" not in message


@pytest.mark.parametrize("override", ["seed=null", "optimizer.momentum=0.9", "model.depth=28", f"seed={2**32 - 1}"])
def test_values_at_the_edges_pass(override):
    check_config(compose_cfg([override]))


@pytest.mark.parametrize("dataset, schema", [("digits", FileDatasetConfig), ("mnist", FileDatasetConfig),
                                             ("svhn", SVHNConfig), ("cifar10", Cifar10Config),
                                             ("folder", FolderConfig)])
def test_every_dataset_composes_typed_by_its_schema(dataset, schema):
    cfg = compose_cfg([f"dataset={dataset}"] + (["case=custom"] if dataset == "folder" else []))
    assert OmegaConf.get_type(cfg.dataset) is schema and OmegaConf.get_type(cfg.trainer) is TrainerConfig
    assert OmegaConf.get_type(cfg) is Config


@pytest.mark.parametrize("override", ["seed=abc", "trainer.max_epochs=abc", "model.depth=abc", "depth=abc",
                                      "optimizer.lr=true"])
def test_the_schema_refuses_bad_types_at_composition(override):
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg([override])
    assert isinstance(info.value.__cause__, ValidationError)
    assert f"full_key: {override.split('=')[0]}" in str(info.value.__cause__)


@pytest.mark.parametrize("override", ["+trainer.foo=1", "+dataset.foo=1", "+model.foo=1", "+optimizer.foo=1"])
def test_keys_the_schema_lacks_are_refused(override):
    """Hydra's ``+key=value`` adds even to a typed node; check_config refuses the key, naming it."""
    with pytest.raises(ConfigError, match=rf"^{override[1:].split('=')[0]} is not a key of "):
        check_config(compose_cfg([override]))


@pytest.mark.parametrize("override", ["+trainer.strategy=ddp", "trainer.strategy=ddp"])
def test_strategy_is_set_with_or_without_plus(override):
    cfg = compose_cfg([override])
    check_config(cfg)
    assert cfg.trainer.strategy == "ddp" and OmegaConf.is_missing(compose_cfg().trainer, "strategy")


# Every typo or bad value: one `error:` line on stderr naming the key, exit status 1, no traceback.
ROOT = Path(__file__).resolve().parents[2]
TYPOS = [("seed=abc", "seed"), ("seed=1099511627776", "seed"), ("optimizer.lr=-1", "optimizer.lr"),
         ("optimizer.momentum=-1", "optimizer.momentum"), ("dataset.batch_size=0", "dataset.batch_size"),
         ("trainer.max_epochs=-1", "trainer.max_epochs"), ("trainer.max_epochs=0", "trainer.max_epochs"),
         ("trainer.max_epochs=abc", "trainer.max_epochs"), ("+trainer.foo=1", "trainer.foo"),
         ("+dataset.foo=1", "dataset.foo"), ("model.depth=abc", "model.depth"), ("depth=-4", "depth"),
         ("case=custom case.file=/bin/ls", "case.file"), ("case=custom case.file=RANDOM", "case.file"),
         ("hydra.run.dir=AFILE/sub", "hydra.run.dir")]
FAST_TYPOS = ["+trainer.foo=1"]  # the rest run in the slow test below; in-process checks cover the values


def run_cli(override: str, tmp_path: Path, env: dict = None) -> subprocess.CompletedProcess:
    (tmp_path / "random.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "afile").write_text("a regular file: no dir can be made under it (tests run as root)")
    args = override.replace("RANDOM", str(tmp_path / "random.bin")).replace("AFILE", str(tmp_path / "afile")).split()
    if not override.startswith("hydra.run.dir"):
        args.append(f"hydra.run.dir={tmp_path / 'run'}")
    return subprocess.run([sys.executable, "-m", "src.train", *args, "trainer.enable_progress_bar=false"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=None if env is None else {**os.environ, **env})


def check_one_line(proc: subprocess.CompletedProcess, key: str) -> None:
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    names = lines[0].replace("superclass file", "case.file").replace("run dir (hydra.run.dir", "hydra.run.dir")
    assert key in names.split(":")[1] if key == "hydra.run.dir" else key in names, lines[0]


@pytest.mark.parametrize("override, key", [t for t in TYPOS if t[0] in FAST_TYPOS])
def test_typos_are_one_line_naming_the_key(override, key, tmp_path):
    check_one_line(run_cli(override, tmp_path), key)


@pytest.mark.slow
@pytest.mark.parametrize("override, key", TYPOS)
def test_every_typo_and_bad_value_is_one_line_naming_the_key(override, key, tmp_path):
    check_one_line(run_cli(override, tmp_path), key)


@pytest.mark.parametrize("override, option", [("case=case9", "case/case9"),
                                              pytest.param("method=foo", "method/foo", marks=pytest.mark.slow)])
def test_unknown_group_options_are_refused_listing_the_options(override, option, tmp_path):
    proc = run_cli(override, tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    key, value = override.split("=")
    assert proc.stderr.startswith(f"error: {override} is not an option of {key}/") and "options:" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["0", pytest.param("", marks=pytest.mark.slow)])
def test_only_hydra_full_error_1_turns_the_one_line_errors_off(value, tmp_path):
    check_one_line(run_cli("seed=abc", tmp_path, env={"HYDRA_FULL_ERROR": value}), "seed")


@pytest.mark.slow
def test_hydra_full_error_1_gives_hydras_own_traceback(tmp_path):
    proc = run_cli("seed=abc", tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 1 and "Traceback" in proc.stderr


def test_compose_works_after_any_import_of_src():
    """The README's compose API: the schema that conf/config.yaml extends is registered by `import src`."""
    code = ("import src.report.paper\nfrom hydra import compose, initialize_config_dir\n"
            f"with initialize_config_dir(config_dir={str(ROOT / 'conf')!r}, version_base='1.3'):\n"
            "    print(compose(config_name='config', overrides=['seed=7']).seed)")
    # This checkout's src, from another dir (the venv's install may be of another checkout).
    proc = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0 and proc.stdout.strip() == "7", proc.stderr[-1500:]


@pytest.mark.parametrize("target", ["src.data.folder_stream.folder_datamodule", "src.data.no_such_module.Nothing"])
def test_a_folder_run_checks_its_keys_without_a_stray_error_line(target, caplog):
    """Issue 36 §5: Hydra's get_class logs "Error getting class at ..." at ERROR before it raises; a folder run's
    _target_ is a factory function, so every folder run printed that false error first."""
    cfg = compose_cfg(["dataset=folder", "case=custom", f"dataset._target_={target}"])
    with caplog.at_level(logging.DEBUG):
        check_config(cfg)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
