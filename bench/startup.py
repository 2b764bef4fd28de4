"""Start-up: wall time of the commands that train nothing, and of the default run, imports included.

    python -m bench.startup [--repeats 3] [--no-run]

Lightning and torch are imported only where a run trains (src/train.py's functions), so ``--help``, ``--cfg job``,
a config error Hydra raises while composing and ``src.report --help`` should answer in about a second. Each
command runs ``--repeats`` times in a fresh interpreter; the median wall time is printed, with the machine's load
average (a busy machine stretches every figure). The default run (``python -m src.train``, digits, 30 epochs) is
timed once, beside the duration its own record gives (``duration_s``: from ``train()``'s start, imports excluded).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {  # name: arguments of python; the config error is one Hydra refuses while composing
    "import src.train": ["-c", "import src.train"],
    "src.train --help": ["-m", "src.train", "--help"],
    "src.train --cfg job": ["-m", "src.train", "--cfg", "job"],
    "src.train seed=abc (config error)": ["-m", "src.train", "seed=abc"],
    "src.report --help": ["-m", "src.report", "--help"],
}


def wall(arguments: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *arguments], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def default_run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        seconds = wall(["-m", "src.train", f"hydra.run.dir={tmp}"])
        record = json.loads((Path(tmp) / "metrics.json").read_text())
    return {"command": "src.train (the default run)", "wall_s": round(seconds, 1),
            "run_reports_s": record.get("duration_s")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-run", action="store_true", help="leave out the default run (about 10 s)")
    args = parser.parse_args()
    for name, arguments in COMMANDS.items():
        times = [wall(arguments) for _ in range(args.repeats)]
        print(json.dumps({"bench": "startup", "command": name, "median_wall_s": round(statistics.median(times), 2),
                          "target_s": 1.5, "load_avg_1min": round(os.getloadavg()[0], 1)}), flush=True)
    if not args.no_run:
        print(json.dumps({"bench": "startup", **default_run(), "load_avg_1min": round(os.getloadavg()[0], 1),
                          "cpu_count": os.cpu_count()}), flush=True)


if __name__ == "__main__":
    main()
