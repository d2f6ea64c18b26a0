"""Tests for the single-query baselines GRU4Rec, Caser and SASRec (sine_jax.models)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import default as default_config
from sine_jax.errors import ConfigError
from sine_jax.losses import full_softmax_loss
from sine_jax.models import caser as caser_lib
from sine_jax.models import gru4rec as gru4rec_lib
from sine_jax.models import sasrec as sasrec_lib

B, N, D, M = 4, 5, 8, 30
R = M + 3  # table rows: 2 pad rows past M, as when the table is split over devices
TOL = {"rtol": 1e-5, "atol": 1e-5}
CLASSES = [gru4rec_lib.GRU4Rec, caser_lib.Caser, sasrec_lib.SASRec]


def model_config(**overrides):
    """`config.model` with D = 8, n = 5, 2 SASRec blocks of 2 heads, small Caser filters;
    `overrides` maps dotted paths ("caser.num_vertical") to values."""
    cfg = default_config.get_config().model
    cfg.embed_dim, cfg.max_seq_len = D, N
    cfg.sasrec.num_blocks, cfg.sasrec.num_heads = 2, 2
    cfg.caser.num_horizontal, cfg.caser.num_vertical = 3, 2
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        with node.ignore_type():  # allows the wrongly typed values of the validation test
            node[leaf] = value
    return cfg


@functools.cache
def _initial_state(cls):
    model = cls(num_items=M, table_rows=R, model_config=model_config(), rngs=nnx.Rngs(0))
    return nnx.split(model)


def build(cls):
    """A fresh model (M items, R table rows); built once per class (initialisation compiles
    random-number programs, seconds on a loaded CPU)."""
    return nnx.merge(*_initial_state(cls), copy=True)  # the cached state stays untouched


@functools.partial(jax.jit, static_argnums=0)
def _encode(graphdef, state, hist):
    return nnx.merge(graphdef, state).encode(hist)


def encode(model, hist):
    """model.encode(hist), jitted (one compile per model structure and shapes)."""
    return np.asarray(_encode(*nnx.split(model), hist))


def histories(rng, batch=B, n=N, num_items=M):
    """Left-padded random histories (numpy int32); row 0 is all padding, row 1 is full."""
    hist = np.zeros((batch, n), np.int32)
    for b in range(1, batch):
        length = n if b == 1 else rng.integers(1, n + 1)
        hist[b, n - length :] = rng.integers(1, num_items + 1, size=length)
    return hist


def randomize(model, names, seed=1, scale=0.3):
    """Replaces the named parameters (e.g. zero biases) by random values (numpy: no random
    program to compile)."""
    rng = np.random.default_rng(seed)
    for name in names:
        param = getattr(model, name)
        param[...] = jnp.asarray(scale * rng.normal(size=param.shape), jnp.float32)


# ---------------------------------------------------------------------------------------------
# Contract: shapes, masking, independence.


@pytest.mark.parametrize("cls", CLASSES)
def test_shape_and_finite(cls):
    model = build(cls)
    hist = histories(np.random.default_rng(0))  # row 0: padding only
    query = encode(model, hist)
    assert query.shape == (B, D)
    assert np.isfinite(query).all()


@pytest.mark.parametrize("cls", CLASSES)
def test_padding_row_and_batch_independence(cls):
    model = build(cls)
    randomize(model, [name for name in vars(model) if "bias" in name])
    hist = histories(np.random.default_rng(1))
    before = encode(model, hist)
    # (a) table row 0 (padding) set to random values changes nothing.
    table = np.array(model.item_embedding[...])
    table[0] = np.random.default_rng(3).normal(size=D)
    model.item_embedding[...] = jnp.asarray(table)
    np.testing.assert_allclose(encode(model, hist), before, **TOL)
    # (b) a user's output does not depend on the other rows of the batch.
    for b in range(B):
        mixed = histories(np.random.default_rng(2))[::-1].copy()
        mixed[b] = hist[b]
        np.testing.assert_allclose(encode(model, mixed)[b], before[b], **TOL)
    # (c) a smaller gathered table with remapped ids (as the row-sparse train step) is the same.
    ids = np.unique(np.asarray(hist))  # sorted: 0 (padding) stays row 0
    remapped = jnp.asarray(np.searchsorted(ids, np.asarray(hist)).astype(np.int32))
    model.item_embedding = nnx.Param(jnp.asarray(np.asarray(model.item_embedding[...])[ids]))
    np.testing.assert_allclose(encode(model, remapped), before, **TOL)


# ---------------------------------------------------------------------------------------------
# Training.


LEARNING_RATE = 1e-2


@functools.partial(jax.jit, static_argnums=0)
def _train(graphdef, params, rest, hist, targets, steps):
    tx = optax.adam(LEARNING_RATE)

    def loss_and_accuracy(p):
        m = nnx.merge(graphdef, p, rest)
        query, table = m.encode(hist), m.item_embedding[...]
        loss = jnp.mean(full_softmax_loss(query, table, targets, M))
        top1 = jnp.argmax(query @ table[1 : M + 1].T, axis=-1) + 1
        return loss, jnp.mean(top1 == targets)

    def step(i, carry):
        p, opt_state, first_loss, *_ = carry
        (loss, accuracy), grads = jax.value_and_grad(loss_and_accuracy, has_aux=True)(p)
        updates, opt_state = tx.update(grads, opt_state, p)
        first_loss = jnp.where(i == 0, loss, first_loss)
        return optax.apply_updates(p, updates), opt_state, first_loss, loss, accuracy, grads

    zero = jnp.zeros(())
    carry = (params, tx.init(params), zero, zero, zero, jax.tree.map(jnp.zeros_like, params))
    return jax.lax.fori_loop(0, steps, step, carry)[2:]


def train(model, hist, targets, steps):
    """`steps` full-batch Adam steps on the full-softmax loss; one compile per model (`steps` is
    traced, and the model runs once per step: the loss, accuracy and gradient reported are
    those at the start of the last step). Returns (loss before the first step, loss before the
    last step, top-1 accuracy before the last step, gradient of the last step)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    first, last, accuracy, grads = _train(graphdef, params, rest, hist, targets, steps)
    return float(first), float(last), float(accuracy), grads


def successor_pattern(num_items, n):
    """Every suffix of length 1..n ending at item t (ids wrap around), target t + 1; then one
    history of padding only (target 1), whose gradient must be finite too."""
    hist, targets = [], []
    for t in range(1, num_items + 1):
        for length in range(1, n + 1):
            items = [(t - length + i) % num_items + 1 for i in range(length)]
            hist.append([0] * (n - length) + items)
            targets.append(t % num_items + 1)
    hist.append([0] * n)
    targets.append(1)
    return jnp.asarray(hist, jnp.int32), jnp.asarray(targets, jnp.int32)


@pytest.mark.parametrize("cls", CLASSES)
def test_one_adam_step_lowers_loss(cls):
    hist, targets = successor_pattern(M, N)  # a tiny fixed batch of 151 examples
    # Two steps: the second starts from the parameters after one step.
    before, after, _, grads = train(build(cls), hist, targets, steps=2)
    assert np.isfinite([before, after]).all()
    assert after < before
    leaves = jax.tree.leaves(grads)
    assert leaves and all(np.isfinite(np.asarray(g)).all() for g in leaves)
    # The padding rows of the table (row 0, rows past M) never get a gradient.
    table_grad = np.asarray(grads["item_embedding"][...])
    assert not table_grad[0].any() and not table_grad[M + 1 :].any()
    assert table_grad[1 : M + 1].all(axis=-1).any()


@pytest.mark.parametrize("cls", CLASSES)
def test_learns_successor_pattern(cls):
    hist, targets = successor_pattern(M, N)
    assert int(hist[-2, -1]) == M and int(targets[-2]) == 1  # wraps around
    before, after, accuracy, _ = train(build(cls), hist, targets, steps=200)
    assert accuracy > 0.9, (before, after, accuracy)


# ---------------------------------------------------------------------------------------------
# Config validation.


@pytest.mark.parametrize(
    "cls, field, value, message",
    [
        (gru4rec_lib.GRU4Rec, "embed_dim", 0, "model.embed_dim=0 must be an integer >= 1"),
        (gru4rec_lib.GRU4Rec, "max_seq_len", 2.5, "model.max_seq_len=2.5"),
        (caser_lib.Caser, "caser.num_horizontal", 0, "model.caser.num_horizontal=0"),
        (caser_lib.Caser, "caser.num_vertical", True, "model.caser.num_vertical=True"),
        (sasrec_lib.SASRec, "sasrec.num_heads", 3,
         "model.sasrec.num_heads=3 must divide model.embed_dim=8"),
        (sasrec_lib.SASRec, "sasrec.num_blocks", 0, "model.sasrec.num_blocks=0"),
    ],
)
def test_config_validation(cls, field, value, message):
    cfg = model_config(**{field: value})
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        cls(num_items=M, table_rows=M + 1, model_config=cfg, rngs=nnx.Rngs(0))


# ---------------------------------------------------------------------------------------------
# Numpy references written with explicit loops.


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_gru(x, valid, w_x, b_x, w_h, b_h):
    """PyTorch GRU equations, one user and one step at a time; padded steps are skipped."""
    out = []
    for b in range(x.shape[0]):
        h = np.zeros(w_h.shape[-1])
        for t in range(x.shape[1]):
            if not valid[b, t]:
                continue
            r = np_sigmoid(x[b, t] @ w_x[0] + b_x[0] + h @ w_h[0] + b_h[0])
            z = np_sigmoid(x[b, t] @ w_x[1] + b_x[1] + h @ w_h[1] + b_h[1])
            c = np.tanh(x[b, t] @ w_x[2] + b_x[2] + r * (h @ w_h[2] + b_h[2]))
            h = (1 - z) * c + z * h
        out.append(h)
    return np.stack(out)


def test_gru_matches_numpy_loop():
    model = build(gru4rec_lib.GRU4Rec)
    randomize(model, ["input_bias", "recurrent_bias"])
    hist = histories(np.random.default_rng(4))
    p = {k: np.asarray(getattr(model, k)[...], np.float64) for k in
         ("item_embedding", "input_kernel", "input_bias", "recurrent_kernel", "recurrent_bias")}
    valid = np.asarray(hist) > 0
    x = p["item_embedding"][np.asarray(hist)]
    expected = np_gru(x, valid, p["input_kernel"], p["input_bias"], p["recurrent_kernel"],
                      p["recurrent_bias"])
    np.testing.assert_allclose(encode(model, hist), expected, **TOL)
    assert not expected[0].any()  # all padding: the zero start state


def np_caser_features(x, h_kernel, h_bias, v_kernel, v_bias):
    """Returns (vertical [B, F_v D] filter-major, horizontal [B, n F_h] height-major)."""
    batch, n, d = x.shape
    f_h, f_v = h_kernel.shape[-1], v_kernel.shape[-1]
    vertical = np.zeros((batch, f_v, d))
    horizontal = np.zeros((batch, n, f_h))
    for b in range(batch):
        for f in range(f_v):
            for col in range(d):
                vertical[b, f, col] = sum(x[b, t, col] * v_kernel[t, f] for t in range(n))
                vertical[b, f, col] += v_bias[f]
        offset = 0
        for h in range(1, n + 1):
            filters = h_kernel[offset : offset + h]  # [h, D, F_h]
            offset += h
            for f in range(f_h):
                outs = []
                for i in range(n - h + 1):
                    s = sum(x[b, i + j, k] * filters[j, k, f] for j in range(h) for k in range(d))
                    outs.append(max(s + h_bias[h - 1, f], 0.0))
                horizontal[b, h - 1, f] = max(outs)
    return vertical.reshape(batch, -1), horizontal.reshape(batch, -1)


def test_caser_matches_numpy_loops():
    model = build(caser_lib.Caser)
    randomize(model, ["horizontal_bias", "vertical_bias", "dense_bias"])
    hist = histories(np.random.default_rng(5))
    p = {k: np.asarray(getattr(model, k)[...], np.float64) for k in
         ("item_embedding", "horizontal_kernel", "horizontal_bias", "vertical_kernel",
          "vertical_bias", "dense_kernel", "dense_bias")}
    x = np.where(np.asarray(hist)[..., None] > 0, p["item_embedding"][np.asarray(hist)], 0.0)
    vertical, horizontal = np_caser_features(
        x, p["horizontal_kernel"], p["horizontal_bias"], p["vertical_kernel"], p["vertical_bias"]
    )
    xj = jnp.asarray(x, jnp.float32)
    np.testing.assert_allclose(
        np.asarray(jax.jit(caser_lib.vertical_conv_features)(
            xj, model.vertical_kernel[...], model.vertical_bias[...])), vertical, **TOL)
    np.testing.assert_allclose(
        np.asarray(jax.jit(caser_lib.horizontal_conv_features)(
            xj, model.horizontal_kernel[...], model.horizontal_bias[...])), horizontal, **TOL)
    features = np.concatenate([vertical, horizontal], axis=-1)
    expected = np.maximum(features @ p["dense_kernel"] + p["dense_bias"], 0.0)
    np.testing.assert_allclose(encode(model, hist), expected, **TOL)


# ---------------------------------------------------------------------------------------------
# SASRec.


def np_layernorm(x, scale, bias, eps=1e-8):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * scale + bias


def np_sasrec_block(x, valid, w, num_heads, k_bias=0.0):
    """The authors' block for one user, position by position and head by head (`k_bias`: their
    key bias, which this implementation leaves out)."""
    n, d = x.shape
    dh = d // num_heads
    s = np_layernorm(x, w.attention_norm_scale, w.attention_norm_bias)
    q, k, v = s @ w.q_kernel + w.q_bias, x @ w.k_kernel + k_bias, x @ w.v_kernel + w.v_bias
    attended = np.zeros((n, d))
    for i in range(n):
        keys = [j for j in range(i + 1) if valid[j]]
        for head in range(num_heads):
            cols = slice(head * dh, (head + 1) * dh)
            if not keys:
                continue
            logits = np.array([q[i, cols] @ k[j, cols] / np.sqrt(dh) for j in keys])
            a = np.exp(logits - logits.max())
            a /= a.sum()
            attended[i, cols] = sum(a_j * v[j, cols] for a_j, j in zip(a, keys))
    a = attended + s
    s2 = np_layernorm(a, w.ffn_norm_scale, w.ffn_norm_bias)
    out = np.maximum(s2 @ w.ffn_kernel1 + w.ffn_bias1, 0.0) @ w.ffn_kernel2 + w.ffn_bias2 + s2
    return out * valid[:, None]


sasrec_block = jax.jit(sasrec_lib.sasrec_block, static_argnames="num_heads")


def block_weights(model, index=0):
    names = sasrec_lib.BlockWeights._fields
    return sasrec_lib.BlockWeights(*(np.asarray(getattr(model, name)[...])[index] for name in names))


def sasrec_model():
    model = build(sasrec_lib.SASRec)
    randomize(model, [n for n in sasrec_lib.BlockWeights._fields if "bias" in n]
              + ["final_norm_bias"])
    return model


def test_sasrec_block_matches_numpy_loops():
    model = sasrec_model()
    weights = block_weights(model)
    hist = histories(np.random.default_rng(6))
    valid = np.asarray(hist) > 0
    x = np.random.default_rng(7).normal(size=(B, N, D)).astype(np.float32) * valid[..., None]
    w64 = sasrec_lib.BlockWeights(*(np.asarray(a, np.float64) for a in weights))
    for b in range(B):
        out = sasrec_block(x[b : b + 1], valid[b : b + 1], weights, num_heads=2)
        expected = np_sasrec_block(np.asarray(x[b], np.float64), valid[b], w64, num_heads=2)
        np.testing.assert_allclose(np.asarray(out)[0], expected, rtol=1e-4, atol=1e-5)


def test_a_key_bias_would_change_no_output():
    """The authors' code has a key bias; it adds q . b_k to all of a query's logits, which the
    softmax removes, so leaving it out changes nothing."""
    w = sasrec_lib.BlockWeights(*(np.asarray(a, np.float64) for a in block_weights(sasrec_model())))
    rng = np.random.default_rng(8)
    valid = np.asarray(histories(rng))[1] > 0
    x = rng.normal(size=(N, D)) * valid[:, None]
    k_bias = rng.normal(size=D) * 3.0
    with_bias = np_sasrec_block(x, valid, w, 2, k_bias)
    np.testing.assert_allclose(with_bias, np_sasrec_block(x, valid, w, 2), rtol=1e-10, atol=1e-10)
    # the same bias on the queries does change it: the test can tell
    moved_query = np_sasrec_block(x, valid, w._replace(q_bias=w.q_bias + k_bias), 2)
    assert np.abs(with_bias - moved_query).max() > 1e-3


def test_sasrec_causality():
    model = sasrec_model()
    weights = block_weights(model, index=1)
    rng = np.random.default_rng(8)
    x = rng.normal(size=(1, N, D)).astype(np.float32)
    mask = np.ones((1, N), bool)
    base = np.asarray(sasrec_block(x, mask, weights, num_heads=2))
    for j in range(N):
        perturbed = x.copy()
        perturbed[0, j] += rng.normal(size=D).astype(np.float32)
        out = np.asarray(sasrec_block(perturbed, mask, weights, num_heads=2))
        np.testing.assert_allclose(out[0, :j], base[0, :j], **TOL)
        assert np.abs(out[0, j] - base[0, j]).max() > 1e-3
    # The most recent item changes the query; the oldest of a full history does too.
    hist = histories(np.random.default_rng(10))
    query = encode(model, hist)
    for position in (N - 1, 0):
        changed = np.array(hist)
        changed[1, position] = changed[1, position] % M + 1
        assert np.abs(encode(model, changed)[1] - query[1]).max() > 1e-4


@pytest.mark.parametrize("cls", CLASSES)
def test_initialisation(cls):
    model = build(cls)
    params = nnx.to_flat_state(nnx.state(model, nnx.Param))
    for path, param in params:
        name, value = path[-1], np.asarray(param[...])
        if "bias" in name:
            assert not value.any(), name
        elif "norm_scale" in name:
            np.testing.assert_array_equal(value, 1.0)
        else:
            assert np.isfinite(value).all() and np.abs(value).max() > 0, name
    table = np.asarray(model.item_embedding[...])
    assert table.shape == (R, D)
    assert not table[0].any() and not table[M + 1 :].any() and table[1 : M + 1].all()
