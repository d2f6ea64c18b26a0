"""The train step against the loss written directly from eqs 9-11: one step's metrics, its
gradient and its Adam update, with every loss switch on and off (one CPU device).

The reference is built from the equations, not from `sine_jax.losses`: per example b with
user vector v_b (the model's encoder), item rows e_i, S shared negatives s_1..s_S drawn from
q(i) = log((i + 1) / i) / log(M + 1) and o_i = v_b . e_i - log(S q(i)) (logQ correction on)
or o_i = v_b . e_i (off), the sampled softmax is

    l_b = -o_t + log(exp(o_t) + sum over kept j of exp(o_(s_j)))

where a negative equal to the target t is dropped (accidental hits removed) or kept, and the
full softmax (loss.name=full_softmax, or S >= M) is l_b = -v_b . e_t + log sum_(i=1..M)
exp(v_b . e_i). With M = (1/D)(C - Cbar)(C - Cbar)^T over the L x D prototypes C (Cbar: each
prototype's mean over its D entries), L_c = 1/2 sum_(i != j) M_ij^2, and the step minimises
mean_b l_b + lambda L_c.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import synthetic
from sine_jax import losses, sharding, step

NUM_ITEMS = 40  # M
BATCH = 8  # B; S = negatives_per_example x B


def _config(**overrides):
    config = synthetic.get_config()
    config.model.embed_dim = 16
    config.model.num_interests = 4  # see step_test: K = 2 leaves eq 7 one-hot at init
    config.model.num_prototypes = 8
    config.model.max_seq_len = 6
    config.model.dropout = 0.0  # deterministic: the reference encodes without dropout
    config.train.weight_decay = 0.0  # plain Adam
    config.train.batch_size = BATCH
    config.train.sparse_item_updates = False
    config.loss.negatives_per_example = 2  # S = 16 < M: sampled
    config.mesh.data = config.mesh.model = 1
    for field, value in overrides.items():
        section, name = field.split("__")
        config[section][name] = value
    return config


def _negatives(config, step_number):
    """The step's negatives: the log-uniform sampler keyed by train.seed + 1 and the step."""
    rng = jax.random.fold_in(jax.random.key(config.train.seed + 1), step_number)
    num_samples = config.loss.negatives_per_example * config.train.batch_size
    return np.asarray(losses.log_uniform_sample(rng, num_samples, NUM_ITEMS))


def _batch(config):
    """A batch whose first half of targets are among the negatives (accidental hits)."""
    rng = np.random.default_rng(0)
    shape = (BATCH, config.model.max_seq_len)
    history = rng.integers(1, NUM_ITEMS + 1, shape)
    history[:, : shape[1] // 2] *= rng.random((BATCH, 1)) < 0.5  # some left padding
    target = rng.integers(1, NUM_ITEMS + 1, BATCH)
    target[: BATCH // 2] = rng.choice(_negatives(_config(), 0), BATCH // 2)
    return {"history": history.astype(np.int32), "target": target.astype(np.int32)}


def _q(ids):
    """The log-uniform probability of ids in 1..M."""
    ids = ids.astype(jnp.float32)
    return jnp.log((ids + 1) / ids) / jnp.log(NUM_ITEMS + 1.0)


@functools.cache
def _model():
    """The split model every case trains (the same initial parameters in each)."""
    mesh = sharding.make_mesh(_config(), jax.devices()[:1])
    return step.split_model(_config(), NUM_ITEMS, mesh)


@functools.cache
def _reference_fn(full: bool):
    """value_and_grad of the reference (module docstring) for the full or the sampled
    softmax; the switches are arguments, so the cases of a kind share one compiled program.

    (params, history [B, n], targets [B], negatives [S], logq, hits, lambda) ->
    ((mean_b l_b + lambda L_c, (mean_b l_b, L_c)), gradient)."""

    def loss(params, history, targets, negatives, logq, hits, lam):
        table = params["item_embedding"][...]  # [R, D]
        v = _model().merge(params).encode(history)  # [B, D]
        true = jnp.sum(v * table[targets], axis=1)  # v_b . e_t
        if full:
            per_example = jax.nn.logsumexp(v @ table[1 : NUM_ITEMS + 1].T, axis=1) - true
        else:
            num_samples = negatives.shape[0]
            o_true = true - logq * jnp.log(num_samples * _q(targets))  # [B]
            o_sampled = v @ table[negatives].T - logq * jnp.log(num_samples * _q(negatives))
            kept = 1.0 - hits * (negatives[None, :] == targets[:, None])  # [B, S]
            per_example = -o_true + jnp.log(
                jnp.exp(o_true) + jnp.sum(kept * jnp.exp(o_sampled), axis=1))
        likelihood = jnp.mean(per_example)
        c = params["prototypes"][...]  # [L, D]
        centered = c - jnp.mean(c, axis=1, keepdims=True)
        m = centered @ centered.T / c.shape[1]  # [L, L]
        cov = 0.5 * jnp.sum((m * (1.0 - jnp.eye(c.shape[0]))) ** 2)  # the i != j terms
        return likelihood + lam * cov, (likelihood, cov)

    return jax.jit(jax.value_and_grad(loss, has_aux=True))


def _reference(config, params):
    """((loss, (likelihood, cov)), gradient) of the reference at `params` for `config`."""
    loss_config, batch, negatives = config.loss, _batch(config), _negatives(config, 0)
    full = loss_config.name == "full_softmax" or len(negatives) >= NUM_ITEMS
    return _reference_fn(full)(
        params, batch["history"], batch["target"], negatives,
        float(loss_config.logq_correction), float(loss_config.remove_accidental_hits),
        step.cov_weight(config),
    )


def _one_step(config, tx=None):
    """(params before, params after, metrics) of one step from init; `tx` replaces the step's
    optimizer (None: the step's own Adam)."""
    context, state = step.create_train_state(config, _model(), total_steps=100)
    if tx is not None:
        context = dataclasses.replace(context, tx=tx)
    before = jax.device_get(state.params)
    new_state, metrics = step.make_step_fn(context, config)(state, _batch(config))
    return before, jax.device_get(new_state.params), jax.device_get(metrics)


def _check_metrics(metrics, reference, grads):
    (loss, (likelihood, cov)) = reference
    np.testing.assert_allclose(metrics["likelihood"], likelihood, rtol=1e-5)
    np.testing.assert_allclose(metrics["cov"], cov, rtol=1e-5)
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-5)
    norm = np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(grads)))
    np.testing.assert_allclose(metrics["grad_norm"], norm, rtol=1e-5)


GRADIENT_SCALE = 1e4

# Each switch is on in one case and off in another; lambda is the preset's 0.5 (cov_weight
# None), 2, and 0.
SWITCHES = {
    "defaults": {},
    "no_logq_lambda_2": {"loss__logq_correction": False, "loss__cov_weight": 2.0},
    "hits_kept_lambda_0": {"loss__remove_accidental_hits": False, "loss__cov_weight": 0.0},
    "full_softmax": {"loss__name": "full_softmax", "loss__cov_weight": 1.0},
    "samples_cover_the_catalogue": {"loss__negatives_per_example": 5},  # S = 40 = M: full
}


@pytest.mark.parametrize("case", SWITCHES)
def test_step_gradient_and_metrics_match_the_equations(case):
    config = _config(**SWITCHES[case])
    # Plain gradient steps with the rate -SCALE: the parameters move by SCALE x the gradient
    # (large, so that float32 parameters hold the change to full precision).
    before, after, metrics = _one_step(config, tx=optax.sgd(-GRADIENT_SCALE))
    reference, grads = _reference(config, before)
    _check_metrics(metrics, reference, grads)
    for (path, got), g, p in zip(jax.tree_util.tree_leaves_with_path(after),
                                 jax.tree.leaves(grads), jax.tree.leaves(before)):
        moved = (np.asarray(got, np.float64) - np.asarray(p)) / GRADIENT_SCALE
        g = np.asarray(g, np.float64)
        # float32 rounding: the leaves differ by up to 2e-4 of their norm (the aggregation
        # branch's softmax at tau = 0.1 amplifies it); a wrong term moves them by far more.
        error = np.linalg.norm(moved - g)
        assert error <= 2e-3 * np.linalg.norm(g) + 1e-9, (jax.tree_util.keystr(path), error)
    # The case's switches change the reference: a switch that did not reach the step fails.
    for field in SWITCHES[case]:
        section, name = field.split("__")
        flipped = _config(**{**SWITCHES[case], field: _config()[section][name]})
        (other, _), _ = _reference(flipped, before)
        assert abs(float(other) - float(reference[0])) > 1e-4 * abs(float(reference[0])), field


def test_first_adam_step_is_the_reference_gradient_through_adam():
    """Adam's first step moves each entry by -lr g / (|g| + eps) (bias-corrected moments are
    g and g^2): optax's Adam on the dense parameters, and row-sparse Adam on the item table's
    rows the step touches (0 elsewhere); the dense path's Adam is the same optax Adam."""
    config = _config(train__sparse_item_updates=True)
    before, after, metrics = _one_step(config)
    reference, grads = _reference(config, before)
    _check_metrics(metrics, reference, grads)
    lr, eps = config.train.learning_rate, 1e-8
    for (path, got), g, p in zip(jax.tree_util.tree_leaves_with_path(after),
                                 jax.tree.leaves(grads), jax.tree.leaves(before)):
        name = jax.tree_util.keystr(path)
        g, moved = np.asarray(g, np.float64), np.asarray(got, np.float64) - np.asarray(p)
        want = -lr * g / (np.abs(g) + eps)
        # An entry whose gradient is at rounding level moves by up to lr either way.
        clear = np.abs(g) > 1e-2 * np.abs(g).max()
        np.testing.assert_allclose(moved[clear], want[clear], rtol=1e-3, atol=1e-9,
                                   err_msg=name)
        assert np.all(np.abs(moved) <= lr * (1 + 1e-3)), name
        np.testing.assert_array_equal(moved[g == 0], 0.0, err_msg=name)
