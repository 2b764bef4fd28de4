"""A sweep both ways on this machine: Hydra's basic launcher (one job after another) and hydra/launcher=local with
n_jobs=auto. An 8-run digits sweep (4 cases × 2 seeds, 10 epochs), each way from an empty sweep dir.

Prints the ratio of wall times (basic ÷ local), the cores each kept busy (CPU time of the command and all it
started ÷ its wall time), a job's mean training time each way (``duration_s``), and whether every run's
metrics.json equals the basic launcher's, field for field, timings aside.

    python -m bench.sweep [--epochs 10] [--seeds 2]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import emit
from src.run.provenance import NOT_RESULTS

ROOT = Path(__file__).resolve().parents[1]


def run(sweep_dir: Path, overrides: list[str]) -> dict:
    """The sweep in a subprocess: its wall time, and the CPU time of it and every process it waited for."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "src.train", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"],
                            cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"error: the sweep in {sweep_dir} failed (exit status {result.returncode}): "
                 f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ''}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    chose = next((line for line in result.stderr.splitlines() if line.startswith("n_jobs=")), None)
    # Each job's own training time: jobs side by side that train slower (two vCPUs sharing a host core) show here.
    trained = [json.loads(p.read_text())["duration_s"] for p in sweep_dir.glob("*/metrics.json")]
    return {"wall_s": round(wall, 2), "cores_busy": round(cpu / wall, 2), "n_jobs": chose,
            "job_s": round(sum(trained) / len(trained), 2)}


def records(sweep_dir: Path) -> dict:
    return {p.parent.name: {k: v for k, v in json.loads(p.read_text()).items() if k not in NOT_RESULTS}
            for p in sweep_dir.glob("*/metrics.json")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--cases", default="baseline,case1,case2,case3")
    args = parser.parse_args()
    overrides = ["dataset=digits", f"case={args.cases}", f"seed={','.join(map(str, range(args.seeds)))}",
                 f"trainer.max_epochs={args.epochs}", "trainer.accelerator=cpu", "threads=1",
                 "trainer.enable_progress_bar=false"]
    with tempfile.TemporaryDirectory() as tmp:
        basic = run(Path(tmp) / "basic", [*overrides, "hydra/launcher=basic"])
        local = run(Path(tmp) / "local", [*overrides, "hydra.launcher.n_jobs=auto"])
        expected, got = records(Path(tmp) / "basic"), records(Path(tmp) / "local")
    differ = sorted(job for job in expected if got.get(job) != expected[job])
    emit({"bench": "sweep", "runs": len(expected), "epochs": args.epochs, "cores": len(os.sched_getaffinity(0)),
          "basic": basic, "local": local, "ratio": round(basic["wall_s"] / local["wall_s"], 3), "target": 1.8,
          "equal": not differ and sorted(got) == sorted(expected), "runs_that_differ": differ})


if __name__ == "__main__":
    main()
