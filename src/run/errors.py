"""Errors caused by user input. The entry points print them as one line and exit non-zero."""
import math
import sys


class UserError(Exception):
    """Bad input (config, data, mapping) or a run that cannot go on; the message is for the user."""


class DataMissingError(UserError):
    """A dataset is not on disk and cannot be downloaded."""


class DivergenceError(UserError):
    """The training loss became non-finite."""


class ConfigError(UserError, ValueError):
    """A config value is out of its valid range (e.g. a depth that is not 6n+4)."""


def user_error(error: BaseException):
    """The UserError behind ``error``, if any: ``hydra.utils.instantiate`` wraps whatever a constructor
    raises (a bad folder, a bad depth) in an InstantiationException, whose message is a traceback summary."""
    while error is not None and not isinstance(error, UserError):
        error = error.__cause__
    return error


def exit_code(error: BaseException, prefix: str = "") -> int:
    """The one error-to-exit path of every CLI: a UserError (also one behind a wrapper) is printed as one line,
    ``error: <prefix><message>``, on stderr, and gives exit status 1. Anything else is a bug: re-raised."""
    cause = user_error(error)
    if cause is None:
        raise error
    print(f"error: {prefix}{cause}", file=sys.stderr)
    return 1


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
