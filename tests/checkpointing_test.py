"""Checkpointer: keep-N never deletes the best checkpoint (also
after a restart); state, iterator, progress round-trip;
checksums, quarantine of damaged checkpoints, the fallback when the best one is damaged."""

import os
import shutil
import subprocess
import sys

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sine_jax import checkpointing
from sine_jax.errors import SineError


def _iterator():
    return iter(grain.MapDataset.range(100).map(lambda i: i * 2).to_iter_dataset())


def test_best_checkpoint_survives_keep_n_and_everything_round_trips(tmp_path):
    ckpt = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), keep=1)
    it = _iterator()
    best = checkpointing.Progress(best_metric=0.5, best_step=10, evals_without_improvement=0)
    for step in (10, 20, 30, 40):
        next(it)
        progress = best if step == 10 else checkpointing.Progress(0.5, 10, step // 10 - 1)
        ckpt.save(step, {"w": jnp.full((3,), float(step))}, it, progress)
    ckpt.wait()
    kept = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
    assert kept == [10, 40]  # the latest (keep=1) and the best
    fresh = _iterator()
    abstract = {"w": jax.ShapeDtypeStruct((3,), jnp.float32)}
    state, progress = ckpt.restore(40, abstract, fresh)
    np.testing.assert_array_equal(state["w"], [40.0] * 3)
    assert progress == checkpointing.Progress(0.5, 10, 3)
    assert next(fresh) == 8  # four elements were consumed before the save
    np.testing.assert_array_equal(ckpt.restore_state(10, abstract)["w"], [10.0] * 3)
    ckpt.close()



def test_best_checkpoint_survives_keep_n_after_a_restart(tmp_path):
    """A resumed run (a new Checkpointer on the same directory) still knows which older
    checkpoint is the best, so its next saves do not delete it."""
    directory = str(tmp_path / "checkpoints")
    ckpt = checkpointing.Checkpointer(directory, keep=1)
    it = _iterator()
    ckpt.save(10, {"w": jnp.zeros((3,))}, it, checkpointing.Progress(0.5, 10, 0))
    ckpt.save(20, {"w": jnp.ones((3,))}, it, checkpointing.Progress(0.5, 10, 1))
    ckpt.wait()
    ckpt.close()
    resumed = checkpointing.Checkpointer(directory, keep=1)
    for step in (30, 40):
        resumed.save(step, {"w": jnp.ones((3,))}, it, checkpointing.Progress(0.5, 10, step // 10 - 1))
    resumed.wait()
    resumed.close()
    kept = sorted(int(s) for s in os.listdir(directory) if s.isdigit())
    assert kept == [10, 40]


def test_checkpoints_written_without_a_best_marker_are_never_deleted(tmp_path):
    """Checkpoints of an earlier version carry no best marker on disk: which of them is the
    best is unknown, so none of them is deleted to make room."""
    directory = str(tmp_path / "checkpoints")
    ckpt = checkpointing.Checkpointer(directory, keep=1)
    it = _iterator()
    for step in (10, 20):
        ckpt.save(step, {"w": jnp.zeros((3,))}, it, checkpointing.Progress(0.5, 10, 0))
    ckpt.wait()
    ckpt.close()
    for step in (10, 20):  # as an earlier version wrote them
        shutil.rmtree(os.path.join(directory, str(step), "metrics"))
    resumed = checkpointing.Checkpointer(directory, keep=1)
    resumed.save(30, {"w": jnp.ones((3,))}, it, checkpointing.Progress(0.5, 10, 2))
    resumed.wait()
    resumed.close()
    kept = sorted(int(s) for s in os.listdir(directory) if s.isdigit())
    assert kept == [10, 20, 30]

def _damage(step_dir):
    """Truncates every file of the checkpoint's state item, as a disk fault would."""
    for path in (step_dir / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"")


def test_damaged_latest_checkpoint_is_skipped_for_the_previous_one(tmp_path):
    ckpt = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), keep=3)
    it = _iterator()
    for step in (10, 20):
        next(it)
        ckpt.save(step, {"w": jnp.full((3,), float(step))}, it, checkpointing.Progress())
    ckpt.wait()
    _damage(tmp_path / "checkpoints" / "20")
    abstract = {"w": jax.ShapeDtypeStruct((3,), jnp.float32)}
    step, state, data_iter, _ = ckpt.restore_latest(abstract, _iterator)
    assert step == 10
    np.testing.assert_array_equal(state["w"], [10.0] * 3)
    assert next(data_iter) == 2
    _damage(tmp_path / "checkpoints" / "10")
    assert ckpt.restore_latest(abstract, _iterator) is None
    ckpt.close()


def _save_random(ckpt, step, values):
    it = _iterator()
    ckpt.save(step, {"w": jnp.asarray(values)}, it, checkpointing.Progress(0.5, step, 0))
    ckpt.wait()


def test_flipped_bytes_in_array_data_are_a_damaged_checkpoint_not_other_numbers(
    tmp_path, caplog, flip_a_bit_of_array_data
):
    """Orbax reads such a file without complaint (one entry comes back changed); the
    checksums written at save make it a damaged checkpoint, moved aside and never read."""
    values = np.random.default_rng(0).standard_normal(4096).astype(np.float32)
    ckpt = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), keep=2)
    _save_random(ckpt, 10, values)
    assert (tmp_path / "checkpoints" / "10" / checkpointing.CHECKSUMS_FILE).is_file()
    flip_a_bit_of_array_data(tmp_path / "checkpoints" / "10")
    abstract = {"w": jax.ShapeDtypeStruct((4096,), jnp.float32)}
    assert ckpt.restore_latest(abstract, _iterator) is None
    assert not (tmp_path / "checkpoints" / "10").exists()
    assert (tmp_path / "checkpoints.damaged" / "10" / "state").is_dir()
    warning = next(r.getMessage() for r in caplog.records if "is damaged" in r.getMessage())
    assert "does not match its checksum" in warning and "checkpoints.damaged/10" in warning
    _save_random(ckpt, 10, values)  # the step is written anew, and loads
    np.testing.assert_array_equal(ckpt.restore_state(10, abstract)["w"], values)
    ckpt.close()


def test_a_damaged_best_checkpoint_falls_back_to_the_best_that_loads(tmp_path, caplog):
    writer = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), keep=3)
    for step in (10, 20, 30):
        it = _iterator()
        state = {"params": {"w": jnp.full((8,), float(step))}}
        writer.save(step, state, it, checkpointing.Progress(0.5, step, 0))
    writer.close()
    ckpt = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), keep=3)  # a reader
    abstract = {"w": jax.ShapeDtypeStruct((8,), jnp.float32)}
    step, params = ckpt.restore_best_params(abstract)  # the newest record names step 30
    assert step == 30 and params["w"][0] == 30.0
    _damage(tmp_path / "checkpoints" / "30")
    step, params = ckpt.restore_best_params(abstract, best_step=30, score=lambda p: -p["w"][0])
    assert step == 10 and params["w"][0] == 10.0  # the highest score among 10 and 20
    assert any("using step 10 instead" in r.getMessage() for r in caplog.records)
    for step in (10, 20):
        _damage(tmp_path / "checkpoints" / str(step))
    with pytest.raises(SineError, match="no checkpoint loads .*checkpoints.damaged.*; train"):
        ckpt.restore_best_params(abstract)
    ckpt.close()


def test_an_intact_checkpoint_of_another_shape_is_an_error_not_damage(tmp_path):
    ckpt = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), keep=2)
    _save_random(ckpt, 10, np.zeros(8, np.float32))
    other = {"w": jax.ShapeDtypeStruct((9,), jnp.float32)}
    with pytest.raises(SineError, match="is intact but does not restore into this run"):
        ckpt.restore_latest(other, _iterator)
    assert (tmp_path / "checkpoints" / "10").is_dir()  # not moved: nothing is wrong with it
    ckpt.close()


def test_best_step_falls_back_past_a_damaged_progress_record(tmp_path):
    ckpt = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), keep=3)
    it = _iterator()
    for step, progress in ((10, checkpointing.Progress(0.5, 10, 0)),
                           (20, checkpointing.Progress(0.6, 20, 0))):
        ckpt.save(step, {"w": jnp.full((3,), float(step))}, it, progress)
    ckpt.wait()
    assert ckpt.best_step() == 20
    files = [p for p in (tmp_path / "checkpoints" / "20" / "progress").rglob("*") if p.is_file()]
    assert files
    for path in files:
        path.write_bytes(b"{not json")
    assert ckpt.best_step() == 10  # the newest record that loads
    ckpt.close()


_FULL_DISK = """
import resource, signal, sys
import grain, jax.numpy as jnp, numpy as np
from sine_jax import checkpointing
from sine_jax.errors import SineError
ckpt = checkpointing.Checkpointer(sys.argv[1], keep=2)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, resource.RLIM_INFINITY))
state = {"w": jnp.asarray(np.random.default_rng(0).normal(size=1 << 18), jnp.float32)}
try:
    ckpt.save(10, state, iter(grain.MapDataset.range(4).to_iter_dataset()),
              checkpointing.Progress())
    ckpt.wait()
except SineError as e:
    print(e)
"""


def test_a_failed_save_is_one_line_naming_the_directory(tmp_path):
    """Files capped at 64 KiB (as a full disk would): the asynchronous write of a 1 MiB
    state fails, and the error is one line naming the checkpoint directory."""
    directory = tmp_path / "checkpoints"
    proc = subprocess.run([sys.executable, "-c", _FULL_DISK, str(directory)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (message,) = proc.stdout.splitlines()
    assert message.startswith(f"{directory}: writing a checkpoint failed")
    assert len(message) < len(str(directory)) + 450  # the cause, cut to 300 characters
    assert message.endswith("; is the disk full or the directory read-only?")
