"""Checkpointer: keep-N never deletes the best checkpoint; state, iterator, progress round-trip."""

import os

import grain
import jax
import jax.numpy as jnp
import numpy as np

from sine_jax import checkpointing


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
