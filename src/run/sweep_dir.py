"""The folder of an ad hoc sweep (``-m`` without a preset): one per distinct sweep command; and the depth in a
single run's dir name.

conf/config.yaml's ``hydra.sweep.dir: outputs/sweeps/${sweep_name:${hydra.overrides.task},...}``. The name is derived from the command's
overrides, never from the time, so the same command finds its folder again (resume and skipping depend on it):
a readable prefix (the overrides, sorted) and a short hash of them all, ``case=baseline,case1_seed=0,1-3f9c2a1e``; ``-m`` with no overrides, ``multirun``.
Keys that say how or where to run (``hydra.job.config.override_dirname.exclude_keys``: threads, the accelerator,
the data dir, ...) are left out, as from the job dirs' names: changing them keeps the folder.

Hydra first resolves the sweep dir in the sweep's own config, whose ``hydra.overrides.task`` is the command's
overrides, before any job exists. A job's config has only the job's overrides there: ``use_cache=True`` makes it
reuse the sweep's value (Hydra copies the resolver cache into each job's config, as it does for ``${now:...}``;
the cache key is the arguments' text, the same in both), rather than derive a folder per job.
"""
import hashlib
import re

from omegaconf import OmegaConf

PREFIX_CHARS = 64


def override_key(override: str) -> str:
    """``trainer.max_epochs`` of ``+trainer.max_epochs=3``."""
    return override.split("=", 1)[0].lstrip("+~")


def sweep_name(overrides, exclude=()) -> str:
    """``<readable prefix>-<8 hex digits>`` for a sweep's overrides; ``multirun`` for none."""
    kept = sorted((o for o in overrides if override_key(o) not in set(exclude)), key=lambda o: (override_key(o), o))
    if not kept:
        return "multirun"
    digest = hashlib.sha1("\n".join(kept).encode()).hexdigest()[:8]
    prefix = re.sub(r"[^A-Za-z0-9=,._+-]", "-", "_".join(kept))[:PREFIX_CHARS].rstrip("_-")
    return f"{prefix}-{digest}"


def _resolve(overrides, exclude) -> str:
    return sweep_name([str(o) for o in overrides or ()], [str(k) for k in exclude or ()])


# use_cache: the cache key is the arguments' text ("${hydra.overrides.task}"), the same in every job's config.
OmegaConf.register_new_resolver("sweep_name", _resolve, use_cache=True, replace=True)


def depth_tag(depth, dataset_depth) -> str:
    """``_depth28`` in a single run's dir name when ``depth`` is not the dataset's default, else nothing."""
    return "" if depth == dataset_depth else f"_depth{depth}"


# `${depth_tag:${depth},${dataset.depth}}` in hydra.run.dir (conf/config.yaml).
OmegaConf.register_new_resolver("depth_tag", depth_tag, replace=True)
