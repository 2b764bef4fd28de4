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


# lr_rule (conf/config.yaml): "shared" trains every method at optimizer.lr; "loss_scale" at optimizer.lr times the
# method's loss scale (``Method.loss_scale``: HXE the tree's node count, soft labels with reduction=mean K), so
# that under plain SGD a loss its official code scales down takes steps of cross-entropy's size (docs/methods.md).
LR_RULES = ("shared", "loss_scale")


def lr_factor(rule: str, method) -> float:
    """The factor ``rule`` multiplies ``optimizer.lr`` and ``lr_min`` by, and divides the clipping threshold by
    (``HALModule``), for ``method`` (its tree already set)."""
    if rule not in LR_RULES:
        raise ConfigError(f"lr_rule must be one of {list(LR_RULES)}, got {rule!r}")
    return method.loss_scale() if rule == "loss_scale" else 1.0
