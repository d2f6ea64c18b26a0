"""Process set-up of a command-line run: library logging kept to one-line warnings, host
memory and JAX started in order, and joining a multi-process job (`mesh.distributed`)."""

import logging as logging_std
import sys
import warnings

from absl import logging
from ml_collections import config_dict


class _QuietLibraries(logging_std.Filter):
    """Keeps INFO lines of sine_jax; libraries (orbax, grain, asyncio, ...) show warnings only,
    each as one line: their tracebacks are dropped (a failure the user can fix is reported
    by sine_jax itself, in one line)."""

    def filter(self, record: logging_std.LogRecord) -> bool:
        if "/sine_jax/" in record.pathname:
            return True
        if record.levelno < logging_std.WARNING:
            return False
        record.msg = record.getMessage().split("\n", 1)[0]
        record.args, record.exc_info, record.exc_text, record.stack_info = (), None, None, None
        return True


def _one_line_unraisable(unraisable) -> None:
    """Library callbacks that fail after a failed save (e.g. into orbax's closed event loop)
    are logged in one line instead of a traceback each."""
    logging.debug("ignored in a library callback: %r", unraisable.exc_value)


def quiet_libraries() -> None:
    """sine_jax's INFO lines, the libraries' warnings in one line each, nothing after the
    one-line error of a failure the user can fix."""
    logging.get_absl_handler().addFilter(_QuietLibraries())
    # Orbax's async writes leave "exception never retrieved" futures when a save fails; the
    # failure itself is reported by sine_jax.
    logging_std.getLogger("asyncio").setLevel(logging_std.CRITICAL)
    # ... and, at exit, may leave a coroutine of a failed save never awaited, whose warning
    # would otherwise come after the one-line error.
    warnings.filterwarnings("ignore", message=r"coroutine .* was never awaited")
    sys.unraisablehook = _one_line_unraisable


def start_jax(config: config_dict.ConfigDict, *, join: bool = True) -> None:
    """Before JAX allocates anything: freed host memory stays in the heap
    (`host_memory`); then JAX starts, joins the multi-process job when `mesh.distributed` and
    `join` (`multihost.join`), and the devices are logged."""
    from sine_jax import host_memory

    host_memory.keep_freed_memory_in_heap()
    import jax  # JAX starts here, after flags are parsed

    if config.mesh.distributed and join:
        from sine_jax import multihost

        multihost.join()  # before the first device query
    logging.info("devices: %s", jax.devices())
