"""Process set-up of a command-line run: library logging kept to one-line warnings, host
memory and JAX started in order, and joining a multi-host job (`mesh.distributed`)."""

import logging as logging_std
import os
import sys
import warnings

from absl import logging
from ml_collections import config_dict

from sine_jax.errors import SineError


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


def start_jax(config: config_dict.ConfigDict) -> None:
    """Before JAX allocates anything: freed host memory stays in the heap
    (`host_memory`); then JAX starts, joins the multi-host job when `mesh.distributed`, and
    the devices are logged."""
    from sine_jax import host_memory

    host_memory.keep_freed_memory_in_heap()
    import jax  # JAX starts here, after flags are parsed

    if config.mesh.distributed:
        initialize_distributed()  # before the first device query
    logging.info("devices: %s", jax.devices())


def initialize_distributed() -> None:
    """mesh.distributed: joins the multi-host job (see launch/multihost_example.sh).

    JAX reads the coordinator (JAX_COORDINATOR_ADDRESS) itself and detects SLURM, Open MPI
    and Cloud TPU; the process count and this process's id come from JAX_NUM_PROCESSES and
    JAX_PROCESS_ID when set (JAX does not read those two).

    Raises:
        SineError: a bad variable, or the coordinator cannot be reached.
    """
    import jax

    kwargs = {}
    for name, arg in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
        value = os.environ.get(name, "")
        if value and not value.isdigit():
            raise SineError(f"{name}={value!r} must be a non-negative integer")
        if value:
            kwargs[arg] = int(value)
    try:
        jax.distributed.initialize(**kwargs)
    except Exception as e:  # ValueError, RuntimeError, a timeout reaching the coordinator, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SineError(
            f"mesh.distributed=True: jax.distributed.initialize() failed ({reason}); on every "
            "host set JAX_COORDINATOR_ADDRESS=HOST:PORT (process 0's host), JAX_NUM_PROCESSES "
            "and JAX_PROCESS_ID, or run under SLURM / Open MPI, which are detected"
        ) from e
    logging.info("process %d of %d", jax.process_index(), jax.process_count())
