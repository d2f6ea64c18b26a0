"""What the command-line entry points share (`sine_jax.main` and the launch/ tools): the
config file checked before absl parses the flags, a user's mistake reported in one line with
exit code 2, and the two ways a tool reads its absl flags: global flags through `run_app`, or
flags parsed per call by `parse_flags` for tools whose `main(argv)` also runs in-process.
"""

import contextlib
import logging as logging_std
import sys
import types
from collections.abc import Callable, Sequence

from absl import app, flags, logging

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


def run_app(main: Callable[[list[str]], None]) -> None:
    """`absl.app.run(main)` for a tool with global flags and a --config file: the config file
    is checked first (`exit_on_a_bad_config_file`), and --help prints the tool's docstring and
    flags and exits 0."""
    if any(arg in ("-h", "--help", "--helpshort") for arg in sys.argv[1:]):
        app.usage(shorthelp=True, writeto_stdout=True)
        sys.exit(0)
    exit_on_a_bad_config_file(sys.argv)
    app.run(main)


def parse_flags(
    define: Callable[[flags.FlagValues], None], argv: Sequence[str] | None, doc: str
) -> types.SimpleNamespace:
    """The flags that `define(flag_values)` defines, parsed from `argv` (default
    sys.argv[1:]) into a fresh `flags.FlagValues`, so that a tool's `main(argv)` can run many
    times in one process. `--help` prints `doc` and the flags and exits 0; a bad flag or an
    unexpected argument prints one line `error: ...` and exits 2.

    Returns:
        The values by flag name.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    flag_values = flags.FlagValues()
    define(flag_values)
    if any(arg in ("-h", "--help", "--helpshort", "--helpfull") for arg in argv):
        print(f"{doc.strip()}\n\nflags:\n{flag_values.get_help()}")
        sys.exit(0)
    try:
        rest = flag_values([sys.argv[0], *argv])
    except flags.Error as e:
        _usage_error(str(e).splitlines()[0])
    if len(rest) > 1:
        _usage_error(f"unexpected arguments: {' '.join(rest[1:])}")
    return types.SimpleNamespace(**flag_values.flag_values_dict())


def _usage_error(message: str):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT_CODE)
