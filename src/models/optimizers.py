"""Optimisers of the field's recipes that the typed ``optimizer`` config (SGD's keys) cannot name directly."""
import torch

from src.run.errors import ConfigError


def adam_amsgrad(params, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with AMSGrad, betas (0.9, 0.999): Making Better Mistakes' default optimiser (``--optimizer adam_amsgrad``
    of its scripts/start_training.py). The config's SGD keys momentum and nesterov must stay unset."""
    if momentum or nesterov:
        raise ConfigError("optimizer=adam_amsgrad takes no optimizer.momentum or optimizer.nesterov; set them to 0/false")
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, amsgrad=True)
