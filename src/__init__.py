"""Hierarchical Auxiliary Learning (Cha et al., 2019) on PyTorch Lightning + Hydra."""
from pathlib import Path

from omegaconf import OmegaConf


def _on_cuda(accelerator: str) -> bool:
    import torch

    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


# `${if_cuda:${trainer.accelerator},A,B}` in configs: A when the run trains on a CUDA GPU, else B.
# Lets one config default to bf16 on GPUs and fp32 on CPUs.
OmegaConf.register_new_resolver("if_cuda", lambda accelerator, a, b: a if _on_cuda(accelerator) else b,
                                replace=True)


def _default_depth(dataset: str) -> int:
    """The dataset's ``depth`` in conf/dataset/<dataset>.yaml (else base.yaml's). Only for configs saved before that
    key existed, whose ``depth`` reads ``${default_depth:${dataset.name}}`` (``python -m src.eval`` on old runs)."""
    datasets = Path(__file__).resolve().parents[1] / "conf" / "dataset"
    for path in (datasets / f"{dataset}.yaml", datasets / "base.yaml"):
        depth = OmegaConf.load(path).get("depth") if path.is_file() else None
        if depth is not None:
            return int(depth)
    raise ValueError(f"no depth for dataset {dataset!r} in {datasets}")


OmegaConf.register_new_resolver("default_depth", _default_depth, replace=True)


def _last_stage(target: str) -> int:
    from hydra.utils import get_class

    return max(getattr(get_class(target), "stage_numbers", (1, 2, 3)))


# `${last_stage:${model._target_}}` in conf/method/*.yaml: the default method.position, after the network's last
# stage (the paper's place): 3 on the pre-activation ResNet, 4 on torchvision's (layer4).
OmegaConf.register_new_resolver("last_stage", _last_stage, replace=True)


# The number of devices ``trainer.devices`` names (1 for "auto"): one SLURM task per device, as Lightning's
# SLURM environment requires ``--ntasks-per-node`` to equal ``trainer.devices``; the GPUs of a local job too.
from src.run.resources import device_count as _slurm_tasks  # noqa: E402


# `${slurm_tasks:${trainer.devices}}` in conf/hydra/launcher/slurm*.yaml: tasks (and GPUs) per node.
OmegaConf.register_new_resolver("slurm_tasks", _slurm_tasks, replace=True)


# The typed schema (`base_config`, which conf/config.yaml extends) is in Hydra's ConfigStore as soon as anything
# of `src` is imported, so `hydra.compose` works after any `import src...`, not only under `python -m src.train`.
from src.run import config as _schema  # noqa: E402,F401
from src.run import sweep_dir as _sweep_dir  # noqa: E402,F401  (the ${sweep_name:} resolver of hydra.sweep.dir)
