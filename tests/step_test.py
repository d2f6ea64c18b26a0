"""The train step on meshes of every shape, row-sparse against dense Adam, bf16, clipping,
one compile, and checkpoints that restore onto another mesh (8 fake CPU devices)."""

import dataclasses

import jax
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from configs import synthetic
from sine_jax import checkpointing, sharding, step

NUM_ITEMS = 300


def _config(**overrides):
    config = synthetic.get_config()
    config.model.embed_dim = 16
    # K = 4, not 2: at K = 2 eq 7's softmax is one-hot for every user of these batches at
    # init (tau = 0.1 on LayerNorm-scaled vectors), so the gradients of the aggregation
    # branch (W4, LN4, W3, the eq 1 attention behind the gate) are rounding noise, which
    # Adam scales up to learning-rate-sized steps and no tolerance can compare.
    config.model.num_interests = 4
    config.model.num_prototypes = 8
    config.model.max_seq_len = 6
    config.train.batch_size = 16
    config.loss.negatives_per_example = 2
    for field, value in overrides.items():
        section, name = field.split("__")
        config[section][name] = value
    return config


def _batches(config, num_items=NUM_ITEMS, steps=3, seed=0):
    rng = np.random.default_rng(seed)
    shape = (config.train.batch_size, config.model.max_seq_len)
    for _ in range(steps):
        history = rng.integers(1, num_items + 1, shape)
        history[:, : shape[1] // 2] *= rng.random((shape[0], 1)) < 0.5  # some left padding
        yield {
            "history": history.astype(np.int32),
            "target": rng.integers(1, num_items + 1, shape[0]).astype(np.int32),
        }


def _train(config, batches, num_items=NUM_ITEMS, devices=None):
    """(losses, final params as numpy, (step context, state), step_fn) after the batches."""
    mesh = sharding.make_mesh(config, devices)
    model = step.split_model(config, num_items, mesh)
    context, state = step.create_train_state(config, model, total_steps=100)
    step_fn = step.make_step_fn(context, config)
    batch_sharding = sharding.batch_sharding(mesh)
    losses = []
    for batch in batches:
        batch = {k: jax.device_put(v, batch_sharding) for k, v in batch.items()}
        state, metrics = step_fn(state, batch)
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state.params), (context, state), step_fn


def _assert_params_close(a, b, *, rtol, atol, strays=0.0, stray_atol=0.0):
    """Every leaf of `a` close to `b`, except that a fraction `strays` of a leaf's entries
    may differ by up to `stray_atol`.

    Adam divides each gradient entry by its own running scale, so an entry whose gradient is
    at rounding level (a row sampled once as a negative with a near-zero weight) takes a
    step of up to the learning rate in a direction that rounding decides; a sum taken in
    another order (over shards) can flip it. Such entries are rare; a real difference
    between two steps (a missing collective, a wrong shard) moves whole rows or leaves.
    """
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        name = jax.tree_util.keystr(path)
        x, y = np.asarray(x), np.asarray(y)
        far = np.abs(x - y) > atol + rtol * np.abs(y)
        assert far.sum() <= strays * x.size, f"{name}: {far.sum()} of {x.size} entries differ"
        np.testing.assert_allclose(x[far], y[far], rtol=0, atol=stray_atol, err_msg=name)


@pytest.mark.parametrize("sparse", [False, True])
def test_every_mesh_shape_gives_the_single_device_step(sparse):
    assert jax.device_count() == 8
    config = _config(train__sparse_item_updates=sparse, mesh__data=1)
    batches = list(_batches(config))
    ref_losses, ref_params, _, _ = _train(config, batches, devices=jax.devices()[:1])
    # Dense Adam on (8, 1) and (4, 2), sparse on (2, 4) and (1, 8): every mesh shape once;
    # the prototypes are split over 'model' too on (2, 4).
    for data, model in [(2, 4), (1, 8)] if sparse else [(8, 1), (4, 2)]:
        config = _config(train__sparse_item_updates=sparse, mesh__data=data, mesh__model=model,
                         mesh__shard_prototypes=(data, model) == (2, 4))
        losses, params, (context, state), step_fn = _train(config, batches)
        np.testing.assert_allclose(losses, ref_losses, rtol=2e-5, err_msg=f"{data}x{model}")
        lr_steps = config.train.learning_rate * len(batches)  # Adam: about lr per step at most
        _assert_params_close(params, ref_params, rtol=1e-4, atol=1e-5,
                             strays=1e-3, stray_atol=lr_steps)
        table = state.params["item_embedding"][...]
        assert table.sharding.spec == P("model", None)
        assert table.addressable_shards[0].data.shape[0] == context.model.table_rows // model
        assert step_fn._cache_size() == 1  # one compile for all steps
        prototypes = state.params["prototypes"][...]
        assert prototypes.sharding.spec == (P("model", None) if config.mesh.shard_prototypes
                                            else P())


def test_sparse_equals_dense_adam_when_every_row_is_touched():
    """Histories that hold every item each step: lazy and dense Adam are the same update."""
    rng = np.random.default_rng(3)
    batches = [
        {"history": rng.permutation(np.arange(1, 41)).reshape(8, 5).astype(np.int32),
         "target": rng.integers(1, 41, 8).astype(np.int32)}
        for _ in range(4)
    ]  # 8 x 5 history slots = all 40 items, every step  # fmt: skip
    runs = [
        _train(
            _config(model__max_seq_len=5, train__batch_size=8, loss__negatives_per_example=1,
                    train__sparse_item_updates=sparse),
            batches, num_items=40, devices=jax.devices()[:1],
        )
        for sparse in (False, True)
    ]  # fmt: skip
    (dense_losses, dense_params, *_), (lazy_losses, lazy_params, *_) = runs
    np.testing.assert_allclose(lazy_losses, dense_losses, rtol=1e-6)
    # The paths differ only in rounding (the table's gradient is summed in another order):
    # a few float32 ulps after 4 steps; a tenth of an Adam step (lr 1e-3) would fail.
    _assert_params_close(lazy_params, dense_params, rtol=1e-6, atol=1e-7)


def test_sparse_updates_leave_untouched_rows_exactly_unchanged():
    config = _config(train__sparse_item_updates=True)
    batches = [
        {"history": np.full((16, 6), 7, np.int32), "target": np.full(16, 9, np.int32)}
    ]  # items 7, 9 and the sampled negatives only
    _, before, _, _ = _train(config, [], devices=jax.devices()[:1])
    _, after, (_, state), _ = _train(config, batches, devices=jax.devices()[:1])
    table_before = before["item_embedding"][...]
    table_after = after["item_embedding"][...]
    changed = np.flatnonzero(np.any(table_after != table_before, axis=1))
    assert {7, 9} <= set(changed.tolist())
    assert len(changed) <= 2 + 2 * 16  # targets/history + at most S negatives
    moments = np.asarray(state.item_moments.mu)
    np.testing.assert_array_equal(np.flatnonzero(np.any(moments != 0, axis=1)), changed)
    assert np.all(table_after[NUM_ITEMS + 1 :] == 0)  # padding rows stay zero


def test_sparse_updates_default_on_for_catalogues_much_larger_than_a_step():
    config = _config()
    touched = step.touched_rows_per_step(config)  # 1 + 16 * 6 + 16 + 32 = 145
    ratio = step.SPARSE_DEFAULT_RATIO
    assert not step.uses_sparse_updates(config, ratio * touched - 1)
    assert step.uses_sparse_updates(config, ratio * touched)
    config.loss.name = "full_softmax"
    assert not step.uses_sparse_updates(config, 10 * touched)


def test_gradient_clipping_is_optax_clip_by_global_norm_then_adam():
    config = _config(train__grad_clip_norm=1e-3, train__sparse_item_updates=False)
    batches = list(_batches(config, steps=1))
    _, before, _, _ = _train(config, [], devices=jax.devices()[:1])
    _, clipped, _, _ = _train(config, batches, devices=jax.devices()[:1])
    # The same gradient through optax's own clip + Adam.
    unclipped_config = _config(train__sparse_item_updates=False)
    grads = _gradients(unclipped_config, batches[0])
    tx = optax.chain(optax.clip_by_global_norm(1e-3), optax.adam(1e-3))
    updates, _ = tx.update(grads, tx.init(before), before)
    _assert_params_close(clipped, optax.apply_updates(before, updates), rtol=1e-5, atol=1e-7)


def _gradients(config, batch):
    """The step's gradient: the parameter change of one SGD step with rate 1 (no Adam)."""
    mesh = sharding.make_mesh(config, jax.devices()[:1])
    model = step.split_model(config, NUM_ITEMS, mesh)
    context, state = step.create_train_state(config, model, total_steps=100)
    sgd = dataclasses.replace(context, tx=optax.sgd(-1.0))  # params + grads
    before = jax.device_get(state.params)
    new_state, _ = step.make_step_fn(sgd, config)(state, batch)  # donates `state`
    return jax.tree.map(lambda a, b: a - b, jax.device_get(new_state.params), before)


def test_bfloat16_compute_keeps_float32_weights_and_moves_them_as_float32_does():
    config = _config()
    batches = list(_batches(config, steps=4))
    _, before, _, _ = _train(config, [], devices=jax.devices()[:1])
    f32 = _train(config, batches, devices=jax.devices()[:1])
    bf16 = _train(_config(train__compute_dtype="bfloat16"), batches, devices=jax.devices()[:1])
    np.testing.assert_allclose(bf16[0], f32[0], rtol=1e-2)  # every step's loss
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(bf16[1]))
    # After 4 steps each parameter has moved as in float32: Adam scales each entry's step to
    # about the learning rate, so entries whose gradient bf16 rounds to the other sign move
    # the other way (up to 45% of a leaf's movement here); a leaf that bf16 left unchanged,
    # or moved elsewhere, differs by 100% or more.
    moved = {}
    for (path, p32), p16, p0 in zip(jax.tree_util.tree_leaves_with_path(f32[1]),
                                    jax.tree.leaves(bf16[1]), jax.tree.leaves(before)):
        d32, d16 = np.asarray(p32) - np.asarray(p0), np.asarray(p16) - np.asarray(p0)
        relative = np.linalg.norm(d16 - d32) / np.linalg.norm(d32)
        assert relative < 0.6, (jax.tree_util.keystr(path), relative)
        moved[jax.tree_util.keystr(path)] = d32.ravel(), d16.ravel()
    d32, d16 = (np.concatenate(d) for d in zip(*moved.values()))
    assert d32 @ d16 / np.linalg.norm(d32) / np.linalg.norm(d16) > 0.9


def test_checkpoint_from_a_4x2_mesh_restores_on_8x1_and_on_one_device(tmp_path):
    config = _config(mesh__data=4, mesh__model=2)
    _, params, (_, state), _ = _train(config, list(_batches(config, steps=2)))
    ckpt = checkpointing.Checkpointer(str(tmp_path), keep=2)
    ckpt.manager.save(2, args=checkpointing.ocp.args.Composite(
        state=checkpointing.ocp.args.StandardSave(state)))  # fmt: skip
    ckpt.wait()
    for data, model, devices in [(8, 1, None), (1, 1, jax.devices()[:1])]:
        other = _config(mesh__data=data, mesh__model=model)
        mesh = sharding.make_mesh(other, devices)
        other_model = step.split_model(other, NUM_ITEMS, mesh)
        other_context, _ = step.create_train_state(other, other_model, total_steps=100)
        restored = ckpt.restore_state(2, other_context.abstract_state)
        _assert_params_close(jax.device_get(restored.params), params, rtol=0, atol=0)
        table = restored.params["item_embedding"][...]
        assert table.sharding.mesh.shape == {"data": data, "model": model}
    ckpt.close()
