"""Hierarchical Auxiliary Learning (Cha et al., 2019) on PyTorch Lightning + Hydra."""
from omegaconf import OmegaConf


def _on_cuda(accelerator: str) -> bool:
    import torch

    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


# `${if_cuda:${trainer.accelerator},A,B}` in configs: A when the run trains on a CUDA GPU, else B.
# Lets one config default to bf16 on GPUs and fp32 on CPUs.
OmegaConf.register_new_resolver("if_cuda", lambda accelerator, a, b: a if _on_cuda(accelerator) else b,
                                replace=True)


def _default_depth(dataset: str) -> int:
    from src.paper import default_depth

    return default_depth(dataset)


# `${default_depth:${dataset.name}}` in conf/config.yaml: the paper's depth for the dataset (src/paper.py).
OmegaConf.register_new_resolver("default_depth", _default_depth, replace=True)


# The typed schema (`base_config`, which conf/config.yaml extends) is in Hydra's ConfigStore as soon as anything
# of `src` is imported, so `hydra.compose` works after any `import src...`, not only under `python -m src.train`.
from src import config as _schema  # noqa: E402,F401
