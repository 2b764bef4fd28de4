"""``HALSlurmLauncher``: hydra-submitit-launcher's SLURM launcher with the launch of ``src/run/slurm.py``
(finished jobs skipped before submission, one line per job that does not finish, a summary, an exit status).

Hydra instantiates launchers only from the ``hydra_plugins`` namespace package, and imports every module there
at start-up: this one stays light, and imports the project only when a sweep is launched. The launcher object
itself is pickled into every job (submitit), which runs it as hydra-submitit-launcher's does.
"""
from typing import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher


class HALSlurmLauncher(SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from src.run.slurm import launch

        return launch(self, job_overrides, initial_job_idx)
