"""Peak host RSS of a CIFAR-shaped run: 50,000 + 10,000 32×32×3 images in memory, the 28-layer net.

Trains a few batches through `python -m src.train` in a subprocess and reads the child's ru_maxrss.

    python -m bench.memory [--batches 20]
"""
import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import emit, synthetic_overrides

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20, help="training batches (the data is all loaded)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        overrides = synthetic_overrides("cifar", 50000, 10000) + [
            "trainer.max_epochs=1", f"+trainer.limit_train_batches={args.batches}", "+trainer.limit_test_batches=2",
            "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp}"]
        subprocess.run([sys.executable, "-m", "src.train", *overrides], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux reports KiB
    emit({"bench": "memory", "shape": "cifar", "num_train": 50000, "num_test": 10000,
          "peak_rss_mb": round(peak_mb), "target_mb": 2048, "ratio_to_target": round(peak_mb / 2048, 3)})


if __name__ == "__main__":
    main()
