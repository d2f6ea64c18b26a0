"""Errors a user can fix. Their message is one line, printed as is; the exit code is 2."""

import importlib
import unicodedata
from types import ModuleType


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


def import_optional(module: str, extra: str) -> ModuleType:
    """`module`, a dependency of an optional extra of the package.

    Raises:
        SineError: it is not installed; the message names the extra that installs it.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SineError(
            f"{module.split('.')[0]} is not installed: it comes with sine_jax's {extra!r} "
            f"extra, pip install -e '.[{extra}]'"
        ) from None
