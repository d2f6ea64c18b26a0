"""Row-sparse Adam against optax's dense Adam."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sine_jax import sparse_adam


def test_touched_rows_are_the_distinct_ids_and_invert():
    ids = jnp.array([[5, 0, 5], [2, 9, 0]], jnp.int32)
    unique, inverse = sparse_adam.touched_rows(ids, 8, num_rows=12)
    np.testing.assert_array_equal(unique, [0, 2, 5, 9, 12, 12, 12, 12])
    np.testing.assert_array_equal(np.asarray(unique)[np.asarray(inverse)], ids)


def test_every_row_touched_every_step_is_dense_adam():
    rng = np.random.default_rng(0)
    table = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    dense, dense_state = table, optax.adam(1e-2).init(table)
    lazy, lazy_state = table, sparse_adam.init(table)
    unique = jnp.array([0, 1, 2, 3, 4, 5, 6, 6], jnp.int32)  # all rows, two unused slots
    for _ in range(5):
        grads = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
        updates, dense_state = optax.adam(1e-2).update(grads, dense_state, dense)
        dense = optax.apply_updates(dense, updates)
        row_grads = jnp.concatenate([grads, 99 * jnp.ones((2, 3))])  # unused slots: ignored
        lazy, lazy_state = sparse_adam.update(lazy, lazy_state, unique, row_grads, 1e-2)
    np.testing.assert_allclose(lazy, dense, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(lazy_state.mu, dense_state[0].mu, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(lazy_state.nu, dense_state[0].nu, rtol=1e-6, atol=1e-9)


def test_untouched_rows_and_their_moments_stay_exactly_as_they_were():
    rng = np.random.default_rng(1)
    table = jnp.asarray(rng.normal(size=(10, 4)), jnp.float32)
    state = sparse_adam.init(table)
    state = state._replace(mu=state.mu + 0.5, nu=state.nu + 0.25)  # non-zero moments
    unique = jnp.array([1, 7, 10], jnp.int32)  # rows 1 and 7; one unused slot
    new, new_state = sparse_adam.update(table, state, unique, jnp.ones((3, 4)), 1e-2)
    untouched = np.setdiff1d(np.arange(10), [1, 7])
    np.testing.assert_array_equal(np.asarray(new)[untouched], np.asarray(table)[untouched])
    np.testing.assert_array_equal(np.asarray(new_state.mu)[untouched], 0.5)
    np.testing.assert_array_equal(np.asarray(new_state.nu)[untouched], 0.25)
    assert not np.allclose(np.asarray(new)[[1, 7]], np.asarray(table)[[1, 7]])
    assert int(new_state.count) == 1


def test_update_is_jittable_with_donation():
    table = jnp.ones((5, 2))
    update = jax.jit(sparse_adam.update, donate_argnums=(0, 1))
    new, state = update(table, sparse_adam.init(table), jnp.array([2, 5]), jnp.ones((2, 2)), 0.1)
    np.testing.assert_allclose(np.asarray(new)[2], 0.9, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(new)[[0, 1, 3, 4]], 1.0)
