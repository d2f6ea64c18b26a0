"""The workdir lock: one process at a time, a dead owner's lock taken over with a warning."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from sine_jax import workdir
from sine_jax.errors import SineError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _try_lock_in_another_process(path):
    """(exit code, stderr) of a fresh interpreter that asks for the lock of `path`."""
    script = textwrap.dedent(
        f"""
        import sys
        from sine_jax import workdir
        from sine_jax.errors import SineError
        try:
            with workdir.lock({str(path)!r}):
                pass
        except SineError as e:
            print(e, file=sys.stderr)
            sys.exit(2)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    return proc.returncode, proc.stderr


def test_a_second_process_is_refused_while_the_lock_is_held(tmp_path):
    with workdir.lock(str(tmp_path)):
        owner = json.loads((tmp_path / workdir.LOCK_FILE).read_text())
        assert owner["pid"] == os.getpid()
        code, err = _try_lock_in_another_process(tmp_path)
        assert code == 2
        assert f"{tmp_path} is in use by process {os.getpid()} on " in err
        with workdir.lock(str(tmp_path)):  # re-entrant in the owning process
            pass
        assert json.loads((tmp_path / workdir.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert (tmp_path / workdir.LOCK_FILE).read_text() == ""  # released: no owner left
    assert _try_lock_in_another_process(tmp_path) == (0, "")


def test_the_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    record = {"pid": int(dead.stdout), "host": "elsewhere", "since": "then", "command": "c"}
    (tmp_path / workdir.LOCK_FILE).write_text(json.dumps(record))
    with workdir.lock(str(tmp_path)):
        assert json.loads((tmp_path / workdir.LOCK_FILE).read_text())["pid"] == os.getpid()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(f"process {record['pid']} on elsewhere" in w and "taking it over" in w
               for w in warnings), warnings


def test_a_workdir_that_cannot_be_created_is_one_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SineError, match="Not a directory"):
        with workdir.lock(str(blocker / "run")):
            pass
