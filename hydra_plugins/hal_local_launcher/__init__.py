"""The project's Hydra launcher plugin for one machine (``hydra/launcher=local``, conf/hydra/launcher/)."""
