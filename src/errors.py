"""Errors caused by user input. The entry points print them as one line and exit non-zero."""
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
