"""The processes of a multi-process (multi-host) run: joining the job, process 0 as the one
writer of the workdir's files, values and barriers shared through JAX's coordination service,
and stopping every process together.

Stopping together: `stop_together()` wraps each process's work. An error in one process is
written to the coordination service's key-value store (STOP_KEY) before that process exits,
and every process's watcher thread (blocked on its own wake-up key) is woken: the others
exit at once with the same one-line error (exit code 2; 1 for an unexpected exception, whose
traceback the failing process prints). Process 0 hosts the service, so it leaves last: it
waits up to ACK_TIMEOUT_S for the others to confirm they have read the error. When the work
ends normally the processes meet at a barrier (an error of a late process still reaches the
others) and each wakes its own watcher, which ends before the interpreter does. A process
that dies without a word (killed, out of memory) is noticed by the others within
HEARTBEAT_TIMEOUT_S, after which JAX ends them. SIGTERM ends a process at once: JAX's
preemption service, which would catch it and keep the process running, is turned off.

Outside a joined job (one process) every function here is a no-op or the one-process answer.
"""

import contextlib
import os
import sys
import threading
import time
import traceback

import jax
from absl import logging

from sine_jax.errors import SineError, printable

HEARTBEAT_TIMEOUT_S = 15  # a silent process is declared dead after this long
SHUTDOWN_TIMEOUT_S = 120  # at a normal exit, how long a process waits for the others to end
ACK_TIMEOUT_S = 10  # how long a stopping process 0 waits for the others to read the stop
BARRIER_TIMEOUT_S = 3600  # e.g. process 0 hashing a large input file while the others wait
STOP_KEY = "sine_jax/stop"  # "<process index>\t<exit code>\t<message>"
_WAKE_PREFIX = "sine_jax/wake/"  # + process index: wakes that process's watcher
_ACK_PREFIX = "sine_jax/stopped/"  # + process index: that process has read the stop

_client = None  # the coordination-service client of a joined job
_watcher = None  # the watcher thread
_stopping = threading.Lock()  # held by the thread that ends the process
_counters: dict[str, int] = {}  # name -> how many times `share` / `barrier` used it


def is_primary() -> bool:
    """True in process 0 (and in a one-process run): the process that writes the workdir's
    own files (lock, config.json, inputs.json, metrics, TensorBoard, results.json)."""
    return jax.process_index() == 0


def join() -> None:
    """Joins the multi-process job (mesh.distributed) and starts watching for a peer's stop.
    Call before JAX touches a device.

    JAX reads the coordinator (JAX_COORDINATOR_ADDRESS) itself and detects SLURM, Open MPI
    and Cloud TPU; the process count and this process's id come from JAX_NUM_PROCESSES and
    JAX_PROCESS_ID when set (JAX does not read those two).

    Raises:
        SineError: a bad variable, or the coordinator cannot be reached.
    """
    global _client, _watcher
    kwargs = {}
    for name, arg in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
        value = os.environ.get(name, "")
        if value and not value.isdigit():
            raise SineError(f"{name}={value!r} must be a non-negative integer")
        if value:
            kwargs[arg] = int(value)
    jax.config.update("jax_enable_preemption_service", False)  # SIGTERM ends the process
    try:
        jax.distributed.initialize(
            heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S,
            shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S, **kwargs,
        )
    except Exception as e:  # ValueError, RuntimeError, a timeout reaching the coordinator, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SineError(
            f"mesh.distributed=True: jax.distributed.initialize() failed ({reason}); on every "
            "host set JAX_COORDINATOR_ADDRESS=HOST:PORT (process 0's host), JAX_NUM_PROCESSES "
            "and JAX_PROCESS_ID, or run under SLURM / Open MPI, which are detected"
        ) from e
    from jax._src import distributed  # the client: JAX has no public handle on it

    _client = distributed.global_state.client
    _watcher = threading.Thread(target=_watch, name="sine_jax-stop-watcher", daemon=True)
    _watcher.start()
    import atexit

    atexit.register(_end_watcher)  # runs before JAX's own exit handler (registered earlier)
    logging.info("process %d of %d", jax.process_index(), jax.process_count())


@contextlib.contextmanager
def stop_together():
    """In a joined job, an exception inside ends this process and every other one with the
    one-line error (see the module docstring); in one process it passes through."""
    try:
        yield
        barrier("finished")  # a process that fails late still stops the others
    except BaseException as e:
        if _client is None or isinstance(e, SystemExit):
            raise
        if isinstance(e, SineError):
            message, code = str(e), 2
        elif isinstance(e, KeyboardInterrupt):
            message, code = "interrupted", 130
        else:
            peer = _read_stop(wait_ms=2000)  # e.g. a collective that failed as a peer left
            if peer is not None:
                _stop_as_peer(*peer)
            traceback.print_exc()
            first = (str(e).strip().splitlines() or [""])[0][:300]
            message, code = f"{type(e).__name__}: {first} (traceback above)", 1
        _stop_as_origin(message, code)


def share(name: str, value: str | None) -> str:
    """Process 0's `value` of `name`, in every process (the others pass anything, e.g. None).
    Every process must call it with the same names in the same order."""
    if _client is None:
        return value
    key = f"sine_jax/share/{name}/{_next(name)}"
    if is_primary():
        _client.key_value_set(key, value)
        return value
    return _client.blocking_key_value_get(key, BARRIER_TIMEOUT_S * 1000)


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier `name` (in a joined job)."""
    if _client is not None:
        _client.wait_at_barrier(f"sine_jax/{name}/{_next(name)}", BARRIER_TIMEOUT_S * 1000)


def _next(name: str) -> int:
    _counters[name] = _counters.get(name, 0) + 1
    return _counters[name]


def _read_stop(wait_ms: int = 0) -> tuple[int, int, str] | None:
    """(process, exit code, message) of the stop written to the job, or None."""
    try:
        if wait_ms:
            value = _client.blocking_key_value_get(STOP_KEY, wait_ms)
        else:
            value = _client.key_value_try_get(STOP_KEY)
    except Exception:  # noqa: BLE001 - not written (NOT_FOUND, DEADLINE_EXCEEDED), or no service
        return None
    process, code, message = value.split("\t", 2)
    return int(process), int(code), message


def _watch() -> None:
    """The watcher thread: waits to be woken; ends this process when another one stopped,
    returns otherwise (this process's own stop, or its normal exit)."""
    failures = 0
    while True:
        try:
            _client.blocking_key_value_get(f"{_WAKE_PREFIX}{jax.process_index()}",
                                           BARRIER_TIMEOUT_S * 1000)
            break
        except Exception as e:  # noqa: BLE001 - the long poll's timeout, or a lost service
            if "DEADLINE_EXCEEDED" in str(e):
                failures = 0
                continue
            failures += 1
            if failures < 5:
                time.sleep(1)
                continue
            _stop_as_peer(0, 2, "the coordination service (in process 0) is gone")
    peer = _read_stop()
    if peer is not None and peer[0] != jax.process_index():
        _stop_as_peer(*peer)


def _end_watcher() -> None:
    """At a normal exit: wakes this process's watcher and waits for it to return (a thread
    left inside a JAX call when the interpreter ends would abort the process)."""
    with contextlib.suppress(Exception):
        _client.key_value_set(f"{_WAKE_PREFIX}{jax.process_index()}", "", allow_overwrite=True)
    _watcher.join(timeout=ACK_TIMEOUT_S)


def _stop_as_origin(message: str, code: int) -> None:
    """Writes this process's stop for the others and ends the process."""
    _stopping.acquire()
    try:
        _client.key_value_set(STOP_KEY, f"{jax.process_index()}\t{code}\t{message}")
    except Exception:  # noqa: BLE001 - another process stopped first: report its error
        peer = _read_stop()
        if peer is not None and peer[0] != jax.process_index():
            _stopping.release()
            _stop_as_peer(*peer)
    for process in range(jax.process_count()):
        with contextlib.suppress(Exception):
            _client.key_value_set(f"{_WAKE_PREFIX}{process}", "", allow_overwrite=True)
    _end(message, code)


def _stop_as_peer(process: int, code: int, message: str) -> None:
    """Ends this process because process `process` stopped with `message`."""
    _stopping.acquire()
    _end(f"process {process} of {jax.process_count()} stopped: {message}", code)


def _end(line: str, code: int) -> None:
    """Prints the one line, lets process 0 wait for the others to read the stop, exits."""
    print(f"error: {printable(line)}", file=sys.stderr, flush=True)
    # The error stays the last line: nothing more reaches stderr, neither Python's log nor the
    # coordination client's own (C++) one, which reports the service's socket closing once
    # process 0 has exited.
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stderr.fileno())
    index = jax.process_index()
    with contextlib.suppress(Exception):
        _client.key_value_set(f"{_ACK_PREFIX}{index}", "")
    if index == 0:  # the service lives in this process: let the others read the stop first
        deadline = time.monotonic() + ACK_TIMEOUT_S
        for peer in range(1, jax.process_count()):
            remaining = int((deadline - time.monotonic()) * 1000)
            if remaining <= 0:
                break
            with contextlib.suppress(Exception):
                _client.blocking_key_value_get(f"{_ACK_PREFIX}{peer}", remaining)
    sys.stdout.flush()
    os._exit(code)
