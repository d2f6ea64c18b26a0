"""Errors a user can fix. Their message is one line, printed as is; the exit code is 2."""

import unicodedata


class SineError(Exception):
    """A problem the user can fix (bad input, bad config, unusable workdir)."""


class DataError(SineError):
    """Bad input data: `path:line: reason` (1-based line) or `path: reason`."""


class ConfigError(SineError):
    """Bad configuration: names the field and the allowed values."""


def printable(text: str) -> str:
    """`text` with control characters (terminal escapes, line breaks, NUL, ...) written as
    Python escapes, e.g. ESC as `\\x1b`: what a data file holds is shown, never obeyed by
    the terminal, and a message stays on one line."""
    return "".join(
        c.encode("unicode_escape").decode("ascii")
        if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c
        for c in text
    )
