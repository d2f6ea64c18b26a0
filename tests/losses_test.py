"""Sampled softmax, full softmax and the covariance regularizer against numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sine_jax import losses


def _np_full_softmax(v, table, targets):
    logits = v @ table[1:].T
    m = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(axis=1)) + m[:, 0]
    return lse - logits[np.arange(len(targets)), targets - 1]


def test_log_uniform_sampler_matches_q():
    num_items = 50
    ids = np.asarray(losses.log_uniform_sample(jax.random.key(0), 400_000, num_items))
    assert ids.min() >= 1 and ids.max() <= num_items
    empirical = np.bincount(ids, minlength=num_items + 1)[1:] / ids.size
    q = np.log((np.arange(1, num_items + 1) + 1) / np.arange(1, num_items + 1)) / np.log(
        num_items + 1
    )
    np.testing.assert_allclose(q.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        losses.log_uniform_prob(jnp.arange(1, num_items + 1), num_items), q, rtol=1e-5
    )
    # 400k draws: the standard error of the largest bin (q ~ 0.18) is about 6e-4.
    np.testing.assert_allclose(empirical, q, atol=3e-3)


def test_sampler_cost_does_not_depend_on_catalogue_size():
    def jaxpr_size(num_items):
        fn = lambda rng: losses.log_uniform_sample(rng, 64, num_items)  # noqa: E731
        jaxpr = jax.make_jaxpr(fn)(jax.random.key(0))
        shapes = [v.aval.shape for eqn in jaxpr.eqns for v in eqn.outvars]
        return len(jaxpr.eqns), max(int(np.prod(s)) for s in shapes)

    assert jaxpr_size(1_000) == jaxpr_size(10_000_000)
    assert jaxpr_size(10_000_000)[1] <= 64


def _sampled(v, table, targets, sampled, **kwargs):
    sampled = jnp.asarray(sampled, jnp.int32)
    targets = jnp.asarray(targets, jnp.int32)
    return losses.sampled_softmax_loss(
        v, table[targets], table[sampled], targets, sampled, table.shape[0] - 1, **kwargs
    )


def test_full_softmax_matches_numpy():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(4, 8)).astype(np.float32)
    table = rng.normal(size=(11, 8)).astype(np.float32)
    targets = np.array([1, 5, 10, 3], np.int32)
    np.testing.assert_allclose(
        losses.full_softmax_loss(v, table, targets, 10), _np_full_softmax(v, table, targets),
        rtol=1e-5,
    )


def test_full_softmax_ignores_rows_past_the_catalogue():
    rng = np.random.default_rng(5)
    v = rng.normal(size=(4, 8)).astype(np.float32)
    table = rng.normal(size=(11, 8)).astype(np.float32)
    padded = np.concatenate([table, 100 * np.ones((5, 8), np.float32)])  # huge pad logits
    targets = np.array([1, 5, 10, 3], np.int32)
    np.testing.assert_allclose(
        losses.full_softmax_loss(v, padded, targets, 10), _np_full_softmax(v, table, targets),
        rtol=1e-5,
    )


def test_sampled_softmax_with_every_item_and_no_correction_equals_full():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(3, 6)).astype(np.float32)
    table = jnp.asarray(rng.normal(size=(8, 6)).astype(np.float32))
    targets = np.array([2, 7, 4], np.int32)
    # A sample that contains every item exactly once, with hits removed and no correction,
    # is the full softmax.
    np.testing.assert_allclose(
        _sampled(v, table, targets, np.arange(1, 8), logq_correction=False),
        _np_full_softmax(v, np.asarray(table), targets), rtol=1e-5,
    )
    # Items 1..6 only: targets 2 and 4 are inside (accidental hits removed), target 7 is
    # outside: the reference is a softmax over {1..6} U {target}.
    loss = _sampled(v, table, targets, np.arange(1, 7), logq_correction=False)
    ref = []
    for b, t in enumerate(targets):
        cand = sorted(set(range(1, 7)) | {int(t)})
        logits = np.asarray(table)[cand] @ v[b]
        ref.append(np.log(np.exp(logits).sum()) - np.asarray(table)[t] @ v[b])
    np.testing.assert_allclose(loss, ref, rtol=1e-5)


def test_sampled_softmax_logq_and_accidental_hits_by_hand():
    rng = np.random.default_rng(2)
    num_items, num_samples = 30, 5
    v = rng.normal(size=(2, 4)).astype(np.float32)
    table = rng.normal(size=(num_items + 1, 4)).astype(np.float32)
    sampled = np.asarray(losses.log_uniform_sample(jax.random.key(7), num_samples, num_items))
    targets = np.array([sampled[0], 29 if sampled[0] != 29 else 28], np.int32)  # one hit

    def q(i):
        return np.log((i + 1) / i) / np.log(num_items + 1)

    ref = []
    for b, t in enumerate(targets):
        true = table[t] @ v[b] - np.log(num_samples * q(t))
        negs = [table[s] @ v[b] - np.log(num_samples * q(s)) for s in sampled if s != t]
        logits = np.array([true] + negs)
        ref.append(np.log(np.exp(logits).sum()) - true)
    got = _sampled(v, jnp.asarray(table), targets, sampled)
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_accidental_hits_do_not_change_other_examples():
    v = jnp.ones((2, 3))
    table = jnp.arange(3 * 12, dtype=jnp.float32).reshape(12, 3) / 30
    sampled = np.asarray(losses.log_uniform_sample(jax.random.key(3), 4, 11))
    t = int(sampled[0])
    other = next(i for i in range(1, 12) if i not in set(sampled.tolist()))
    with_hit = _sampled(v, table, [t, other], sampled)
    without = _sampled(v, table, [t, other], sampled, remove_accidental_hits=False)
    assert with_hit[0] < without[0]  # the duplicate of the target was removed
    np.testing.assert_allclose(with_hit[1], without[1])


def test_covariance_regularizer_matches_equations():
    """Each prototype (row) is a variable observed over its D entries: numpy's population
    covariance of the rows is M, and 1/2 (||M||_F^2 - ||diag M||^2) sums M_ij^2 over i < j."""
    rng = np.random.default_rng(3)
    c = rng.normal(size=(6, 5)) + rng.normal(size=(6, 1))  # rows with their own means
    m = np.cov(c, bias=True)  # [6, 6]
    ref = sum(m[i, j] ** 2 for i in range(6) for j in range(i + 1, 6))
    np.testing.assert_allclose(losses.covariance_regularizer(jnp.asarray(c)), ref, rtol=1e-5)


def test_covariance_regularizer_is_zero_only_for_decorrelated_prototypes():
    correlated = np.array([[1, 2, 3, 4], [2, 4, 6, 8]], np.float32)
    assert float(losses.covariance_regularizer(jnp.asarray(correlated))) > 0
    h = np.array([[1, -1, 1, -1], [1, 1, -1, -1]], np.float32)  # orthogonal, zero mean
    assert float(losses.covariance_regularizer(jnp.asarray(h))) == pytest.approx(0.0, abs=1e-7)


def test_covariance_regularizer_gradient_matches_finite_differences():
    c = jnp.asarray(np.random.default_rng(4).normal(size=(4, 3)), jnp.float32)
    grad = jax.grad(losses.covariance_regularizer)(c)
    eps = 1e-3
    for i, j in [(0, 0), (2, 1), (3, 2)]:
        plus = losses.covariance_regularizer(c.at[i, j].add(eps))
        minus = losses.covariance_regularizer(c.at[i, j].add(-eps))
        np.testing.assert_allclose(grad[i, j], (plus - minus) / (2 * eps), rtol=2e-2, atol=1e-4)
