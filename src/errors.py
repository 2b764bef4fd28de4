"""Errors caused by user input. The entry points print them as one line and exit non-zero."""


class UserError(Exception):
    """Bad input (config, data, mapping) or a run that cannot go on; the message is for the user."""


class DataMissingError(UserError):
    """A dataset is not on disk and cannot be downloaded."""


class DivergenceError(UserError):
    """The training loss became non-finite."""


class ConfigError(UserError, ValueError):
    """A config value is out of its valid range (e.g. a depth that is not 6n+4)."""
