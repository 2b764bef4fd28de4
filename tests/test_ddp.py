"""Real multi-process DDP on the CPU (gloo): one job on two ranks, through `python -m src.train`.

That each rank's batches are disjoint and together cover the epoch is unit-tested in tests/data/test_pipeline.py
(test_training_shards_are_disjoint_cover_the_epoch_and_have_equal_steps, test_evaluation_shards_count_every_
sample_exactly_once); here the whole run: half the steps, one set of files, metrics over the whole test set.
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from helpers import compose_cfg, hand_scores
from src.train import build

ROOT = Path(__file__).resolve().parents[1]
TEST_IMAGES = 360  # scikit-learn digits: 1,797 images, 20 % test


def run(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "src.train", "trainer.accelerator=cpu", "trainer.max_epochs=1", "threads=1",
                           "trainer.enable_progress_bar=false", *overrides, f"hydra.run.dir={run_dir}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_two_ranks_halve_the_steps_and_write_every_file_once(tmp_path):
    one = run(tmp_path / "one", "trainer.devices=1")
    assert one.returncode == 0, one.stderr[-2000:]
    two = run(tmp_path / "two", "+trainer.strategy=ddp", "trainer.devices=2")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "Traceback" not in two.stderr and "sync_dist" not in two.stderr

    steps = {name: torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
             for name in ("one", "two")}
    assert steps["one"] > 1 and steps["two"] == math.ceil(steps["one"] / 2), steps

    run_dir = tmp_path / "two"
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "finished" and record["epochs"] == 1
    # The errors are those of the whole test set: one process scoring the same final weights agrees.
    cfg = compose_cfg(["trainer.accelerator=cpu", "trainer.max_epochs=1"])
    pl.seed_everything(cfg.seed, verbose=False)
    datamodule, module, _ = build(cfg, tmp_path / "scratch")
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    module.load_state_dict(state)
    hand = hand_scores(module.net, datamodule)
    assert len(hand["label"]) == TEST_IMAGES
    for key in ("test_error", "test_error_inferred"):
        assert record[key] == pytest.approx(hand[key], abs=1e-4), key
    assert record["test_error_oracle"] == pytest.approx(hand["test_error"], abs=1e-4)
    # Rank 1 wrote into the same run dir, and nothing of its own: one of each file, no temp files left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    assert (run_dir / "confusion.png").is_file() and (run_dir / "hierarchy.npz").is_file()
    assert not list(run_dir.rglob("*.tmp")) and not list(run_dir.rglob("*.corrupt"))
    assert len(list(run_dir.rglob("metrics.json"))) == 1 and len(list(run_dir.rglob("confusion.png"))) == 1
    assert sorted(p.name for p in (run_dir / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert (run_dir / "train_ddp_process_1.log").exists()  # rank 1's own log file, in the same dir
    history = (run_dir / "history.csv").read_text().splitlines()
    assert len(history) == 2  # the header and epoch 0, once
