"""Helpers shared by the tests: compose the real configs the way `python -m src.train` does."""
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import src.config  # noqa: F401  registers the typed schema (base_config) in ConfigStore before composing

CONF = str(Path(__file__).resolve().parents[1] / "conf")
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data"

# Small and fast: a few epochs on digits without progress bars or checkpoints.
FAST = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", "trainer.enable_checkpointing=false",
        "trainer.accelerator=cpu"]


def compose_cfg(overrides: list[str] = ()) -> DictConfig:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))
