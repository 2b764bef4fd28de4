"""Errors caused by user input. The entry points print them as one line and exit non-zero."""
import math


class UserError(Exception):
    """Bad input (config, data, mapping) or a run that cannot go on; the message is for the user."""


class DataMissingError(UserError):
    """A dataset is not on disk and cannot be downloaded."""


class DivergenceError(UserError):
    """The training loss became non-finite."""


class ConfigError(UserError, ValueError):
    """A config value is out of its valid range (e.g. a depth that is not 6n+4)."""


def check_divergence(loss: float, num_classes: int, factor: float, epoch: int, lr: float) -> None:
    """Raise ``DivergenceError`` (one line) when an epoch's mean training loss is non-finite or above
    ``factor × ln(C)``: ln(C) is the cross-entropy of a uniform guess over C classes, so a loss well
    above it means the run has left learning behind even while it stays finite."""
    limit = factor * math.log(num_classes) if num_classes > 1 else math.inf
    if math.isfinite(loss) and loss <= limit:
        return
    what = "became non-finite" if not math.isfinite(loss) else f"is {loss:.4g} > {factor:g} × ln({num_classes}) = {limit:.4g}"
    raise DivergenceError(f"training loss {what} in epoch {epoch}; "
                          f"lower optimizer.lr (now {lr:g}) or set trainer.gradient_clip_val")
