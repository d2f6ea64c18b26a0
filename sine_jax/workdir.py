"""Writing into a workdir: one process at a time (`lock`), JSON files written atomically, the
environment record of results.json and an export's manifest, and failing writes as one-line
errors.

Light on purpose (no JAX at import): the sweep process writes its summaries with it.
"""

import contextlib
import datetime
import fcntl
import json
import os
import socket
import subprocess
import sys
from typing import Any

import numpy as np
from absl import logging

from sine_jax.errors import SineError

LOCK_FILE = ".lock"
_held_locks: dict[str, int] = {}  # lock files this process holds -> nesting depth


@contextlib.contextmanager
def lock(workdir: str):
    """Holds WORKDIR/.lock for the `with` block: an exclusive `flock`, the file naming the
    owner (pid, host, start time, command). Take it before writing anything into WORKDIR
    (the directory itself is created if needed). Re-entrant within a process. The kernel
    releases the lock of a process that dies, but its record stays: a later process takes
    it over with a warning naming the dead owner. On a file system without locks it only
    warns.

    Raises:
        SineError: another process holds it (naming WORKDIR and the owner), or WORKDIR or
            the lock file cannot be created.
    """
    with disk_errors(workdir):
        os.makedirs(workdir, exist_ok=True)
    path = os.path.realpath(os.path.join(workdir, LOCK_FILE))
    if path in _held_locks:
        _held_locks[path] += 1
        try:
            yield
        finally:
            _held_locks[path] -= 1
        return
    try:
        lock_file = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as e:
        raise SineError(f"{path}: {e.strerror} (workdir {workdir})") from None
    with lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _describe_owner(_read_owner(lock_file)) or "another process"
            raise SineError(f"{workdir} is in use by {owner} ({path}); wait for it to end or "
                            f"use another --workdir") from None
        except OSError as e:  # e.g. a file system without locks
            logging.warning("cannot lock %s (%s); a second process on %s is not refused",
                            path, e.strerror, workdir)
        previous = _read_owner(lock_file)
        if previous is not None:
            logging.warning("%s: %s ended without releasing %s; taking it over", path,
                            _describe_owner(previous) or "a process", workdir)
        lock_file.seek(0)
        lock_file.truncate()
        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                   "since": datetime.datetime.now().isoformat(timespec="seconds"),
                   "command": " ".join(sys.argv)}, lock_file)
        lock_file.flush()
        _held_locks[path] = 1
        try:
            yield
        finally:
            del _held_locks[path]
            with contextlib.suppress(OSError):  # released cleanly: no owner recorded
                lock_file.truncate(0)
                lock_file.flush()
            # closing the file releases the flock


def _read_owner(lock_file) -> dict[str, Any] | None:
    """The owner record of an open lock file; None when empty (released), {} when garbled."""
    lock_file.seek(0)
    text = lock_file.read()
    if not text.strip():
        return None
    try:
        owner = json.loads(text)
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


def _describe_owner(owner: dict[str, Any] | None) -> str:
    """'process PID on HOST (since TIME: COMMAND)', or "" when unknown."""
    if not owner or "pid" not in owner:
        return ""
    since = f" (started {owner.get('since')}: {str(owner.get('command', ''))[:200]})"
    return f"process {owner['pid']} on {owner.get('host', '?')}{since}"


def write_json_atomic(path: str, obj: Any) -> None:
    """Writes JSON (sorted keys, indented, a final newline) through a temporary file and a
    rename: never a half-written file. Numpy scalars, tuples and sets are written as numbers
    and lists. A failed write (a full disk) leaves no temporary file and raises OSError
    naming `path`."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as e:  # e.g. a full disk: no half-written file left, the file named
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OSError(e.errno, e.strerror, path) from e


def _json_default(obj):
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")


@contextlib.contextmanager
def disk_errors(workdir: str):
    """Turns a failing write (full disk, read-only or missing directory) into a SineError."""
    try:
        yield
    except SineError:
        raise
    except Exception as e:  # noqa: BLE001 - only OS errors (possibly wrapped) are converted
        cause = e
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        where = cause.filename or workdir
        raise SineError(f"{where}: {cause.strerror or cause} (workdir {workdir})") from e


def environment() -> dict[str, Any]:
    """Versions, git commit and devices, for results.json and an export's manifest."""
    import flax
    import grain
    import jax
    import optax
    import orbax.checkpoint

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "orbax_checkpoint": orbax.checkpoint.__version__,
        "grain": getattr(grain, "__version__", "unknown"),
        "numpy": np.__version__,
        "git_commit": commit,
        "devices": [str(d) for d in jax.devices()],
    }
