"""Dropout: the shared primitive, the rate field, and every model's use of it (identity at
evaluation, random but reproducible at training, nothing when the rate is 0)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import default as default_config
from sine_jax import models
from sine_jax.errors import ConfigError
from sine_jax.models import layers

M, N, D = 30, 5, 8
NAMES = [name for name in models.ENCODERS if name != "sine_cate"]


def test_dropout_zeroes_about_rate_and_scales_the_rest_exactly():
    x = jnp.asarray(np.random.default_rng(0).uniform(1.0, 2.0, (200, 50)), jnp.float32)
    out = np.asarray(layers.dropout(x, 0.3, jax.random.key(1)))
    dropped = out == 0.0
    assert abs(dropped.mean() - 0.3) < 0.02
    np.testing.assert_allclose(out[~dropped], np.asarray(x)[~dropped] / 0.7, rtol=1e-6)
    np.testing.assert_array_equal(layers.dropout(x, 0.3, None), x)  # evaluation
    np.testing.assert_array_equal(layers.dropout(x, 0.0, jax.random.key(1)), x)


def test_embed_history_projects_the_dropped_embeddings():
    rng = np.random.default_rng(1)
    table = jnp.asarray(rng.standard_normal((M + 1, D)), jnp.float32)
    history = jnp.asarray([[0, 0, 3, 7, 2], [5, 1, 9, 9, 4]], jnp.int32)
    w = jnp.asarray(rng.standard_normal((D, 3)), jnp.float32)
    for rng_key in (None, jax.random.key(2)):
        x, project = layers.embed_history(table, history, 0.5, rng_key)
        want = np.where(np.asarray(history)[..., None] > 0, np.asarray(x), 0.0)
        np.testing.assert_array_equal(x, want)  # padding stays zero
        np.testing.assert_allclose(project(w), np.asarray(x) @ np.asarray(w), rtol=1e-5, atol=1e-6)
    plain, _ = layers.embed_history(table, history)
    np.testing.assert_array_equal(plain, np.asarray(table)[np.asarray(history)] * (
        np.asarray(history)[..., None] > 0))


@pytest.mark.parametrize("rate", [-0.1, 1.0, "0.2", True])
def test_a_bad_rate_is_refused(rate):
    cfg = default_config.get_config().model
    with cfg.ignore_type():
        cfg.dropout = rate
    with pytest.raises(ConfigError, match="model.dropout"):
        layers.dropout_rate(cfg, 0.0)


def test_none_takes_the_models_own_rate():
    cfg = default_config.get_config().model
    assert layers.dropout_rate(cfg, 0.25) == 0.25
    cfg.dropout = 0.0
    assert layers.dropout_rate(cfg, 0.25) == 0.0


def _model_config(name, rate):
    cfg = default_config.get_config().model
    cfg.name, cfg.embed_dim, cfg.max_seq_len, cfg.num_prototypes = name, D, N, 6
    cfg.num_interests, cfg.sasrec.num_heads = 2, 2
    cfg.caser.num_horizontal, cfg.caser.num_vertical, cfg.caser.markov_order = 3, 2, 3
    cfg.dropout = rate
    return cfg


@functools.cache
def _outputs(name, rate):
    model = models.build_model(_model_config(name, rate), M, nnx.Rngs(0), table_rows=M + 1)
    history = jnp.asarray([[0, 0, 3, 7, 2], [5, 1, 9, 9, 4], [0, 0, 0, 0, 6]], jnp.int32)
    graphdef, state = nnx.split(model)

    @jax.jit
    def encode(state, key):
        return nnx.merge(graphdef, state).encode(history, key)

    @jax.jit
    def deterministic(state):
        return nnx.merge(graphdef, state).encode(history)

    return (np.asarray(deterministic(state)), np.asarray(encode(state, jax.random.key(3))),
            np.asarray(encode(state, jax.random.key(3))), np.asarray(encode(state, jax.random.key(4))))


@pytest.mark.parametrize("name", NAMES)
def test_every_model_drops_out_at_training_only(name):
    plain, first, again, other = _outputs(name, 0.5)
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, again)  # reproducible for a key
    assert np.abs(first - plain).max() > 1e-4  # a key changes the output ...
    assert np.abs(first - other).max() > 1e-4  # ... and so does another key
    if name == "mind":  # it also draws its routing-logit start from the key at training
        return
    plain0, keyed0, _, _ = _outputs(name, 0.0)
    np.testing.assert_allclose(keyed0, plain0, rtol=1e-6, atol=1e-6)  # rate 0: no dropout
