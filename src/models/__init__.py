"""The networks: the pre-activation ResNet, HAL's auxiliary block, the methods' parts and the LightningModule."""
import importlib

# `_target_: src.models.PreActResNet` in conf/config.yaml (and configs saved by older runs), resolved on first use
# so that importing one model module does not load the others. Code imports from the defining module.
_LAZY = {"PreActResNet": "resnet", "AuxiliaryBlock": "auxiliary"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
