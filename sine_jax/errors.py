"""Errors a user can fix. Their message is one line, printed as is; the exit code is 2."""


class SineError(Exception):
    """A problem the user can fix (bad input, bad config, unusable workdir)."""


class DataError(SineError):
    """Bad input data: `path:line: reason` (1-based line) or `path: reason`."""


class ConfigError(SineError):
    """Bad configuration: names the field and the allowed values."""
