"""What the command-line entry points share: the config file checked before absl parses
the flags, and a user's mistake reported in one line with exit code 2.
"""

import contextlib
import logging as logging_std
import sys
from collections.abc import Sequence

from absl import logging

from sine_jax.errors import SineError

USER_ERROR_EXIT_CODE = 2


def exit_on_a_bad_config_file(argv: Sequence[str]) -> None:
    """--config=FILE[:ARG] that is missing or whose get_config fails: one line and exit 2
    (ml_collections would report it with a traceback while parsing the flags). Loading it
    also puts the working directory on sys.path, so that config files import `configs.*`
    when a script runs by path (`python launch/x.py`)."""
    from sine_jax import run_config

    for i, arg in enumerate(argv[1:], 1):
        if arg == "--config" and i + 1 < len(argv):
            spec = argv[i + 1]
        elif arg.startswith("--config="):
            spec = arg.removeprefix("--config=")
        else:
            continue
        try:
            run_config.load_config_file(spec)
        except SineError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(USER_ERROR_EXIT_CODE)


@contextlib.contextmanager
def one_line_errors():
    """A SineError inside ends the process with `error: <message>` on stderr (the last line:
    later log lines are silenced) and exit code 2."""
    try:
        yield
    except SineError as e:
        logging.get_absl_handler().setLevel(logging_std.CRITICAL + 1)  # the error stays last
        print(f"error: {e}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)
