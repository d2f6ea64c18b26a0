"""The one error path of every command line (`sine_jax.main` and the launch/ tools): a mistake
the user can fix, wherever it is found (a flag of the wrong type, a misspelt config field, the
config file, a config value, the data, the workdir, an export), ends with one line
`error: <message>` on stderr (control characters escaped) and exit code 2, never a traceback.

Two kinds of tools: those with global absl flags and a --config file start with
`run_app(main)`; those whose `main(argv)` also runs in-process parse their flags per call with
`parse_flags` and are decorated with `@tool` (a SineError becomes the line and the return
value 2).
"""

import contextlib
import functools
import logging as logging_std
import sys
import types
from collections.abc import Callable, Sequence

from absl import app, flags, logging

from sine_jax.errors import SineError, printable

USER_ERROR_EXIT_CODE = 2


class UsageError(SineError):
    """A bad command-line argument (a flag, or an argument where none is expected)."""


def print_error(message: str) -> None:
    """`error: <message>` on stderr, control characters escaped."""
    print(f"error: {printable(message)}", file=sys.stderr)


def exit_with_error(message: str):
    """Prints the one line and exits with code 2; later log lines are silenced, so the error
    stays the last line."""
    logging.get_absl_handler().setLevel(logging_std.CRITICAL + 1)
    print_error(message)
    sys.exit(USER_ERROR_EXIT_CODE)


@contextlib.contextmanager
def one_line_errors():
    """A SineError inside ends the process through `exit_with_error`."""
    try:
        yield
    except SineError as e:
        exit_with_error(str(e))


def tool(main: Callable[[Sequence[str] | None], int | None]) -> Callable[..., int]:
    """Decorates a launch tool's `main(argv=None)`: a SineError raised inside (a bad flag from
    `parse_flags` included) prints its one line and returns 2; otherwise main's own return
    value (None: 0). In-process callers get the code; `sys.exit(main())` passes it on."""

    @functools.wraps(main)
    def run(argv: Sequence[str] | None = None) -> int:
        try:
            code = main(argv)
        except SineError as e:
            print_error(str(e))
            return USER_ERROR_EXIT_CODE
        return 0 if code is None else code

    return run


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
        with one_line_errors():
            run_config.load_config_file(spec)


def run_app(main: Callable[[list[str]], None]) -> None:
    """`absl.app.run(main)` for a tool with global flags and a --config file, on the one error
    path: --help prints the tool's docstring and flags and exits 0; the config file is
    checked first (`exit_on_a_bad_config_file`); a flag that does not parse is one line
    (`parse_global_flags`); a SineError raised by main is one line."""
    if any(arg in ("-h", "--help", "--helpshort") for arg in sys.argv[1:]):
        app.usage(shorthelp=True, writeto_stdout=True)
        sys.exit(0)
    exit_on_a_bad_config_file(sys.argv)

    def main_with_one_line_errors(argv: list[str]) -> None:
        with one_line_errors():
            main(argv)

    app.run(main_with_one_line_errors, flags_parser=parse_global_flags)


def parse_global_flags(argv: list[str]) -> list[str]:
    """absl's global flags parsed from `argv`; a flag that does not parse (unknown, wrong
    type, a misspelt config field with ml_collections' "Did you mean" suggestion) is one line
    and exit 2. Returns the remaining arguments."""
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # noqa: BLE001 - flags.Error, or ml_collections' KeyError & co.
        exit_with_error(flag_error_message(e, argv))


def flag_error_message(error: Exception, argv: Sequence[str]) -> str:
    """One line for a flag-parsing failure: absl's own first line, or for a misspelt config
    field the flag, the field and ml_collections' suggestion."""
    if isinstance(error, flags.Error):
        return (str(error).strip().splitlines() or [type(error).__name__])[0]
    inner = error  # ml_collections raises AttributeError(KeyError("'key'\nDid you mean ..."))
    while inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
    lines = str(inner.args[0] if inner.args else inner).strip().splitlines() or [""]
    if isinstance(inner, (KeyError, AttributeError)):
        key = lines[0].strip("'\"")
        names = [arg.split("=", 1)[0] for arg in argv[1:] if arg.startswith("--config.")]
        flag = next((n for n in names if key in n.removeprefix("--").split(".")), "--config.*")
        hint = " ".join(line.strip() for line in lines[1:])
        return f"{flag}: the config has no field {key!r}" + (f"; {hint}" if hint else "")
    return f"{type(inner).__name__}: {' '.join(line.strip() for line in lines)}"


def parse_flags(
    define: Callable[[flags.FlagValues], None], argv: Sequence[str] | None, doc: str,
    positional: str | None = None,
) -> types.SimpleNamespace:
    """The flags that `define(flag_values)` defines, parsed from `argv` (default
    sys.argv[1:]) into a fresh `flags.FlagValues`, so that a tool's `main(argv)` can run many
    times in one process. `--help` prints `doc` and the flags and exits 0.

    Args:
        positional: the name under which one argument that is not a flag is returned (None
            when there is none); without it, no such argument is allowed.

    Returns:
        The values by flag name (and `positional`).

    Raises:
        UsageError: a bad flag or an unexpected argument (a `@tool` prints it, returns 2).
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
        raise UsageError(str(e).splitlines()[0]) from None
    values = flag_values.flag_values_dict()
    if positional is not None:
        values[positional] = rest.pop(1) if len(rest) > 1 else None
    if len(rest) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(rest[1:])}")
    return types.SimpleNamespace(**values)
