"""Writing into a workdir: JSON files written atomically, the environment record of
results.json and an export's manifest, and failing writes as one-line errors.

Light on purpose (no JAX at import): the sweep process writes its summaries with it.
"""

import contextlib
import json
import os
import subprocess
from typing import Any

import numpy as np

from sine_jax.errors import SineError


def write_json_atomic(path: str, obj: Any) -> None:
    """Writes JSON (sorted keys, indented, a final newline) through a temporary file and a
    rename: never a half-written file. Numpy scalars, tuples and sets are written as numbers
    and lists."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


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
