"""The project's Hydra launcher plugin for SLURM (``hydra/launcher=slurm``, conf/hydra/launcher/)."""
