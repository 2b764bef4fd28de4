"""What this machine has, and how many jobs of a sweep it runs at once (``hydra/launcher=local``, ``tune.n_jobs``).

- ``check_hardware(cfg)``: a run that asks for an accelerator this machine lacks (``trainer.accelerator=gpu``
  without CUDA, ``mps`` off Apple silicon, more GPUs than there are) is one ``ConfigError`` line naming what
  was asked, what the machine has, and the override that runs here, instead of Lightning's 30-line traceback.
- ``auto_jobs(needs, machine)``: ``n_jobs=auto`` is the smallest of cores ÷ the cores one job uses, GPUs ×
  ``jobs_per_gpu`` ÷ the GPUs one job takes (when the runs train on GPUs), and available memory ÷ one job's
  estimated peak; with the line that says which bound it was.
- ``GpuSlots``: hands each job the GPUs it runs on (``CUDA_VISIBLE_DEVICES``), up to ``jobs_per_gpu`` jobs on
  one GPU, a DDP job (``trainer.devices=N``) N distinct GPUs.
"""
import glob
import os
import sys
from dataclasses import dataclass
from typing import Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from src.run.errors import ConfigError

GB = 1024 ** 3
# Peak host memory of a run = the interpreter with torch and Lightning (963 MB measured by bench.memory,
# docs/performance.md) + a multiple of its images' uint8 bytes in memory: bench.memory's CIFAR-shaped run
# (60,000 × 3,072 bytes = 184 MB) peaked at 1,754 MB, (1,754 - 963) / 184 = 4.3.
BASE_BYTES = 963 * 1024 ** 2
BYTES_PER_IMAGE_BYTE = 4.3
# Images kept in memory (train + test) and their uint8 bytes each, of the in-memory datasets.
IN_MEMORY = {"digits": (1797, 8 * 8), "mnist": (70_000, 28 * 28), "cifar10": (60_000, 3 * 32 * 32),
             "cifar100": (60_000, 3 * 32 * 32), "svhn": (99_289, 3 * 32 * 32)}
# A streaming run holds batches, not the dataset: each DataLoader worker process adds about this much.
WORKER_BYTES = 400 * 1024 ** 2


@dataclass
class Machine:
    cores: int
    gpus: int
    available_bytes: Optional[int]  # MemAvailable; None where unknown
    mps: bool = False

    def describe(self) -> str:
        gpus = f"{self.gpus} CUDA GPU{'s' if self.gpus != 1 else ''}" if self.gpus else "no CUDA GPU"
        return f"{self.cores} CPU core{'s' if self.cores != 1 else ''}, {gpus}" + (", Apple MPS" if self.mps else "")


def available_memory() -> Optional[int]:
    """``MemAvailable`` of /proc/meminfo (what can be allocated without swapping), in bytes."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def no_gpu_driver() -> bool:
    """Linux without NVIDIA's (/dev/nvidia0...) or ROCm's (/dev/kfd) device files: no GPU torch could use, known
    without importing torch (2 s of a sweep's start-up)."""
    return sys.platform.startswith("linux") and not (os.path.exists("/dev/kfd") or glob.glob("/dev/nvidia[0-9]*"))


def this_machine() -> Machine:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if no_gpu_driver():
        return Machine(cores, 0, available_memory(), False)
    import torch

    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    return Machine(cores, torch.cuda.device_count(), available_memory(), mps)


def device_count(devices) -> int:
    """The number of devices ``trainer.devices`` names: an integer, "0,1" (two), [0, 1]; 1 for "auto"."""
    if isinstance(devices, int):
        return devices
    if isinstance(devices, str):
        parts = [p for p in devices.split(",") if p.strip()]
        return int(parts[0]) if len(parts) == 1 and parts[0].strip().isdigit() else len(parts) if "," in devices else 1
    return len(devices)  # a list of device indices


def devices_of(trainer: DictConfig) -> int:
    return device_count(trainer.devices)


def on_gpu(cfg: DictConfig, machine: Machine) -> bool:
    accelerator = str(cfg.trainer.accelerator)
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and machine.gpus > 0)


def check_hardware(cfg: DictConfig, machine: Optional[Machine] = None) -> None:
    """One line when the run asks for hardware this machine lacks (module docstring)."""
    machine = machine or this_machine()
    accelerator, devices = str(cfg.trainer.accelerator), cfg.trainer.devices
    runs = "trainer.accelerator=gpu" if machine.gpus else "trainer.accelerator=mps" if machine.mps else \
        "trainer.accelerator=cpu"
    if accelerator in ("gpu", "cuda") and not machine.gpus:
        raise ConfigError(f"trainer.accelerator={accelerator} asks for a CUDA GPU, and this machine has "
                          f"{machine.describe()}: run with {runs}")
    if accelerator == "mps" and not machine.mps:
        raise ConfigError(f"trainer.accelerator=mps asks for Apple's MPS GPU, and this machine has "
                          f"{machine.describe()}: run with {runs}")
    if accelerator not in ("cpu", "auto", "gpu", "cuda", "mps"):
        return  # tpu, hpu, a custom one: Lightning's own checks
    wanted = devices_of(cfg.trainer) if devices != "auto" else 1
    has = machine.gpus if on_gpu(cfg, machine) else machine.mps if accelerator == "mps" else None
    if has is not None and wanted > has:
        raise ConfigError(f"trainer.devices={devices} asks for {wanted} GPUs, and this machine has "
                          f"{machine.describe()}: run with trainer.devices={has}")


def peak_bytes(cfg: DictConfig) -> int:
    """One run's estimated peak host memory (see BASE_BYTES)."""
    name = str(cfg.dataset.name)
    if name in IN_MEMORY:
        images, size = IN_MEMORY[name]
        return int(BASE_BYTES + BYTES_PER_IMAGE_BYTE * images * size)
    workers = OmegaConf.select(cfg, "dataset.num_workers", default=0) or 0
    return BASE_BYTES + workers * WORKER_BYTES


def cores_of(cfg: DictConfig, machine: Machine) -> int:
    """The cores one job keeps busy: its torch threads (null: all of them), plus its DataLoader workers on the
    streaming path (they decode while the main process trains)."""
    threads = cfg.get("threads") or machine.cores
    return threads + (OmegaConf.select(cfg, "dataset.num_workers", default=0) or 0)


@dataclass
class Needs:
    """What one job of the sweep takes (the largest over its jobs)."""
    cores: int
    peak_bytes: int
    gpus: int = 0  # per job, 0 when it trains on the CPU


def needs_of(configs: Sequence[DictConfig], machine: Machine, mem_per_job_gb: Optional[float] = None) -> Needs:
    peak = int(mem_per_job_gb * GB) if mem_per_job_gb is not None else max(peak_bytes(c) for c in configs)
    return Needs(cores=max(cores_of(c, machine) for c in configs), peak_bytes=peak,
                 gpus=max((devices_of(c.trainer) if on_gpu(c, machine) else 0) for c in configs))


def auto_jobs(needs: Needs, machine: Machine, jobs: int, jobs_per_gpu: int = 1,
              mem_per_job_gb: Optional[float] = None) -> tuple[int, str]:
    """``(n, line)``: how many jobs at once, and why (module docstring). Never more than ``jobs``, at least 1."""
    bounds = [(machine.cores // needs.cores,
               f"{machine.cores} cores ÷ {needs.cores} per job (threads"
               + (" + DataLoader workers)" if needs.cores > 1 and needs.cores != machine.cores else ")"))]
    if needs.gpus:
        bounds.append((machine.gpus * jobs_per_gpu // needs.gpus,
                       f"{machine.gpus} GPUs × jobs_per_gpu={jobs_per_gpu} ÷ {needs.gpus} per job"))
    if machine.available_bytes is not None:
        how = "given by hydra.launcher.mem_per_job_gb" if mem_per_job_gb is not None else "estimated"
        bounds.append((machine.available_bytes // needs.peak_bytes,
                       f"{machine.available_bytes / GB:.1f} GB available memory ÷ {needs.peak_bytes / GB:.2f} GB "
                       f"per job ({how})"))
    n, why = min(bounds, key=lambda b: b[0])
    others = "; ".join(f"{text}: {b}" for b, text in bounds if text != why)
    if jobs < n:
        return jobs, (f"n_jobs=auto: {jobs} at once, one per job of the sweep (the machine allows {n}: {why}"
                      + (f"; {others}" if others else "") + ")")
    line = f"n_jobs=auto: {max(n, 1)} at once, bound by {why}" + (f"; also {others}" if others else "")
    if n < 1:
        line += "; fewer than one job fits: running one at a time anyway"
    return max(n, 1), line


class GpuSlots:
    """Which GPUs a job gets: the least loaded ones, at most ``jobs_per_gpu`` jobs on each."""

    def __init__(self, gpus: int, jobs_per_gpu: int = 1) -> None:
        self.capacity = jobs_per_gpu
        self.load = [0] * gpus

    def take(self, n: int) -> Optional[tuple[int, ...]]:
        """``n`` distinct GPUs with room, least loaded first (then lowest index); None while there are not."""
        free = sorted((load, gpu) for gpu, load in enumerate(self.load) if load < self.capacity)
        if len(free) < n:
            return None
        chosen = tuple(sorted(gpu for _, gpu in free[:n]))
        for gpu in chosen:
            self.load[gpu] += 1
        return chosen

    def give_back(self, gpus: Sequence[int]) -> None:
        for gpu in gpus:
            self.load[gpu] -= 1


def visible_devices(gpus: Sequence[int]) -> str:
    """``CUDA_VISIBLE_DEVICES`` for a job on ``gpus``: indices into the launcher's own visible devices."""
    outer = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [d.strip() for d in outer.split(",")] if outer else None
    return ",".join(names[g] if names and g < len(names) else str(g) for g in gpus)


def auto_workers(cfg: DictConfig, most: int) -> tuple[int, str]:
    """``tune.n_jobs=auto``: the rule of ``auto_jobs`` for one process's workers (at most ``most``), shared with
    the jobs the local launcher runs beside this one (``HAL_JOBS_SIDE_BY_SIDE``: one study per arm at once)."""
    machine = this_machine()
    n, line = auto_jobs(needs_of([cfg], machine), machine, most)
    side_by_side = int(os.environ.get("HAL_JOBS_SIDE_BY_SIDE", 1))
    if side_by_side > 1:
        n, line = max(1, n // side_by_side), f"{line}; ÷ {side_by_side} jobs side by side: {max(1, n // side_by_side)}"
    return n, line
