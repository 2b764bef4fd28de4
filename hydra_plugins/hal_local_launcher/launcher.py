"""``HALLocalLauncher``: a sweep's jobs side by side on this machine, with the SLURM launcher's semantics; the
logic is in ``src/run/local.py``.

Hydra imports every module of the ``hydra_plugins`` namespace package at start-up: this one stays light, and
imports the project only when a sweep is launched. The launcher object is pickled into every job, which runs
it as hydra-submitit-launcher's runs in a SLURM task (``src/run/worker.py``).
"""
from typing import Any, Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class HALLocalLauncher(Launcher):
    def __init__(self, **params: Any) -> None:
        self.params = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                       for k, v in params.items()}
        self.config = self.hydra_context = self.task_function = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from src.run.local import launch

        return launch(self, job_overrides, initial_job_idx)
