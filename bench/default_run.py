"""Wall time (imports included) and test accuracy of the default run, `python -m src.train`.

    python -m bench.default_run [--repeats 1]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import emit

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "src.train", f"hydra.run.dir={tmp}"], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wall = time.perf_counter() - start
            record = json.loads((Path(tmp) / "metrics.json").read_text())
        emit({"bench": "default_run", "wall_s": round(wall, 1), "target_wall_s": 120,
              "test_acc": round(record["test_acc"], 2), "target_test_acc": 97.0,
              "dataset": record["dataset"], "case": record["case"], "epochs": record["epochs"]})


if __name__ == "__main__":
    main()
