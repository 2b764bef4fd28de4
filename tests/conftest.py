"""Shared fixtures; the helpers they use are in tests/helpers.py."""
from pathlib import Path

import pytest

from helpers import FAST, compose_cfg


@pytest.fixture
def cfg_factory():
    return lambda *overrides: compose_cfg([*FAST, *overrides])


@pytest.fixture
def run_train(tmp_path):
    """train(cfg) in a fresh run dir; returns the metrics record."""
    from src.train import train

    def run(*overrides: str, run_dir: Path = None, callbacks=()) -> dict:
        cfg = compose_cfg([*FAST, *overrides])
        out = run_dir or tmp_path / "run"
        out.mkdir(parents=True, exist_ok=True)
        return train(cfg, out, callbacks=callbacks)

    return run
