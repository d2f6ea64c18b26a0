"""Tests for sine_jax.models.sine (and layers.masked_softmax): each equation against a numpy
reference written from the paper."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import logging
from flax import nnx
from ml_collections import config_dict

from sine_jax.errors import ConfigError
from sine_jax.models import layers, sasrec
from sine_jax import sine_options
from sine_jax.models import sine as model_lib

B, N, D, K, L, M = 4, 5, 8, 2, 6, 20
TOL = {"rtol": 1e-5, "atol": 1e-5}


# ---------------------------------------------------------------------------------------------
# Numpy references, written from the paper's equations with explicit loops.


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_masked_softmax_1d(logits, valid):
    out = np.zeros_like(logits)
    if valid.any():
        out[valid] = np_softmax(logits[valid])
    return out


def np_layernorm(x, gain, bias, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gain + bias


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_eq1(x, valid, w1, w2, pos=None):
    """Returns z [B, D], a [B, n]."""
    keys = x if pos is None else x + pos
    z, a = [], []
    for b in range(x.shape[0]):
        logits = np.array([np.tanh(keys[b, t] @ w1) @ w2 for t in range(x.shape[1])])
        a_b = np_masked_softmax_1d(logits, valid[b])
        a.append(a_b)
        z.append(sum(a_b[t] * x[b, t] for t in range(x.shape[1])))
    return np.stack(z), np.stack(a)


def np_eq2(z, c, k):
    """Returns C^u [B, K, D], idx [B, K]."""
    cu, ids = [], []
    for b in range(z.shape[0]):
        s = c @ z[b]
        idx = np.argsort(-s, kind="stable")[:k]
        ids.append(idx)
        cu.append(c[idx] * np_sigmoid(s[idx])[:, None])
    return np.stack(cu), np.stack(ids)


def np_eq3(x, cu, w3, ln1, ln2, scale=1.0):
    """P(k|t) [B, n, K]; ln1/ln2 are (gain, bias); `scale` multiplies the logits."""
    p = np.zeros(x.shape[:2] + (cu.shape[1],))
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            q = np_layernorm(x[b, t] @ w3, *ln1)
            logits = scale * np.array(
                [q @ np_layernorm(cu[b, k], *ln2) for k in range(cu.shape[1])]
            )
            p[b, t] = np_softmax(logits)
    return p


def np_eq3_cosine(x, cu, temperature=0.07):
    p = np.zeros(x.shape[:2] + (cu.shape[1],))
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            xt = x[b, t] / max(np.linalg.norm(x[b, t]), 1e-6)
            cos = [xt @ cu[b, k] / np.linalg.norm(cu[b, k]) for k in range(cu.shape[1])]
            p[b, t] = np_softmax(np.array(cos) / temperature)
    return p


def np_eq4(x, valid, pos, w1, w2):
    """P(t|k) [B, n, K] with per-interest W_{k,1} [K, D, H], W_{k,2} [K, H]."""
    p = np.zeros(x.shape[:2] + (w1.shape[0],))
    for b in range(x.shape[0]):
        for k in range(w1.shape[0]):
            logits = np.array(
                [np.tanh((x[b, t] + pos[t]) @ w1[k]) @ w2[k] for t in range(x.shape[1])]
            )
            p[b, :, k] = np_masked_softmax_1d(logits, valid[b])
    return p


def np_eq4_gated(x, valid, pos, w1, w2, p_kt):
    p = np.zeros(x.shape[:2] + (w2.shape[1],))
    for b in range(x.shape[0]):
        for k in range(w2.shape[1]):
            logits = np.array(
                [
                    (np.tanh((x[b, t] + pos[t]) @ w1) @ w2)[k] * p_kt[b, t, k]
                    for t in range(x.shape[1])
                ]
            )
            p[b, :, k] = np_masked_softmax_1d(logits, valid[b])
    return p


def np_eq5(p_kt, p_tk, x, ln3=None):
    phi = np.zeros((x.shape[0], p_tk.shape[2], x.shape[2]))
    for b in range(x.shape[0]):
        for k in range(p_tk.shape[2]):
            weight = p_tk[b, :, k] if p_kt is None else p_kt[b, :, k] * p_tk[b, :, k]
            phi[b, k] = sum(weight[t] * x[b, t] for t in range(x.shape[1]))
    return phi if ln3 is None else np_layernorm(phi, *ln3)


def np_eq6(p_kt, cu, valid, w, w4, ln4, items=None, pos=None):
    """Returns Xhat [B, n, D], C_apt [B, D]."""
    xhat = np.stack([p_kt[b] @ cu[b] for b in range(cu.shape[0])])
    if items is not None:
        xhat = xhat + items
    pooled, _ = np_eq1(xhat, valid, w, w4, pos)
    return xhat, np_layernorm(pooled, *ln4)


def np_eq78(c_apt, phi, tau, scale=1.0):
    e = np.stack(
        [
            np_softmax(scale * np.array([c_apt[b] @ phi[b, k] for k in range(phi.shape[1])]) / tau)
            for b in range(phi.shape[0])
        ]
    )
    v = np.stack(
        [sum(e[b, k] * phi[b, k] for k in range(phi.shape[1])) for b in range(phi.shape[0])]
    )
    return v, e


def np_dense_concat(c_apt, phi, kernel, bias):
    q = np.concatenate([phi.mean(1), c_apt], -1) @ kernel + bias
    e = np.stack([np_softmax(phi[b] @ q[b]) for b in range(phi.shape[0])])
    return np.einsum("bk,bkd->bd", e, phi), e


def np_sine(params, history, opts, k, tau, x=None):
    """The whole model in numpy from `params` (a flat dict of numpy arrays); `x` [B, n, D]
    replaces the history's item embeddings (the encoder's output)."""
    valid = history > 0
    if x is None:
        x = params["item_embedding"][history] * valid[..., None]
    pos = params["position_embedding"]
    cpos = pos if opts.positional_in_concept_attention else None
    z, a = np_eq1(x, valid, params["concept_w1"], params["concept_w2"], cpos)
    cu, idx = np_eq2(z, params["prototypes"], k)
    ln = lambda name: (params[f"{name}/scale"], params[f"{name}/bias"])
    scale = 1.0 / x.shape[-1] if opts.logit_scale == "cosine" else 1.0
    if opts.assignment == "layernorm":
        p_kt = np_eq3(x, cu, params["w3"], ln("norm1"), ln("norm2"), scale)
    else:
        p_kt = np_eq3_cosine(x, cu)
    ln3 = ln("norm3") if opts.interest_layernorm else None
    if opts.interest_attention == "per_interest":
        p_tk = np_eq4(x, valid, pos, params["interest_w1"], params["interest_w2"])
        phi = np_eq5(p_kt, p_tk, x, ln3)
    else:
        p_tk = np_eq4_gated(x, valid, pos, params["interest_w1"], params["interest_w2"], p_kt)
        phi = np_eq5(None, p_tk, x, ln3)
    shared = opts.aggregation_attention == "shared_w3"
    w = params["w3"] if shared else params["aggregation_w"]
    items = x if opts.aggregation_attention == "own_plus_items" else None
    _, c_apt = np_eq6(p_kt, cu, valid, w, params["aggregation_w4"], ln("norm4"), items, cpos)
    if opts.aggregation == "temperature":
        v, e = np_eq78(c_apt, phi, tau, scale)
    else:
        v, e = np_dense_concat(c_apt, phi, params["query_kernel"], params["query_bias"])
    if opts.output_projection:
        v = v @ params["output_w"]
    return {
        "user_vector": v,
        "interests": phi,
        "interest_weights": e,
        "prototype_ids": idx,
        "assignment": p_kt,
        "concept_attention": a,
    }


# ---------------------------------------------------------------------------------------------
# Helpers.


def _rand(rng, *shape, scale=0.5):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _history(rng):
    """[B, n] left-padded histories: partial, full, a single item, all padding."""
    h = rng.integers(1, M + 1, size=(B, N)).astype(np.int32)
    h[0, :2] = 0
    h[2, :-1] = 0
    h[3] = 0
    return h


def _layernorm(rng, dim=D):
    """An nnx.LayerNorm with random gain and bias, and its numpy (gain, bias)."""
    norm = nnx.LayerNorm(dim, rngs=nnx.Rngs(0))
    gain, bias = 1.0 + _rand(rng, dim, scale=0.3), _rand(rng, dim, scale=0.3)
    norm.scale[...] = jnp.asarray(gain)
    norm.bias[...] = jnp.asarray(bias)
    return norm, (gain, bias)


def _params(module):
    """Flat {"a/b": numpy array} of the module's parameters."""
    flat = nnx.to_flat_state(nnx.state(module, nnx.Param))
    return {"/".join(map(str, path)): np.asarray(var[...], np.float64) for path, var in flat}


def _random_model(opts, seed, n=N):
    """A SINE whose every parameter (LayerNorms included) is random and non-trivial.

    Built abstractly (no initialisation is compiled: on a CPU that costs seconds per variant),
    then filled from numpy."""
    module = nnx.eval_shape(lambda: _model(opts, n=n))
    rng = np.random.default_rng(seed)
    for _, var in nnx.to_flat_state(nnx.state(module, nnx.Param)):
        var.set_value(jnp.asarray(_rand(rng, *var.shape, scale=0.5)))
    return module


def _copy_shared_params(src, dst):
    """Copy into `dst` every parameter of `src` with the same path and shape."""
    src_flat = dict(nnx.to_flat_state(nnx.state(src, nnx.Param)))
    for path, var in nnx.to_flat_state(nnx.state(dst, nnx.Param)):
        if path in src_flat and src_flat[path].shape == var.shape:
            var.set_value(src_flat[path][...])


def _model(opts, seed=0, n=N, k=K, num_prototypes=L):
    return model_lib.SINE(
        num_items=M,
        table_rows=M + 1,
        embed_dim=D,
        num_interests=k,
        num_prototypes=num_prototypes,
        max_seq_len=n,
        options=opts,
        rngs=nnx.Rngs(seed),
    )


def _model_config(**overrides):
    cfg = config_dict.ConfigDict(
        dict(
            name="sine",
            embed_dim=D,
            num_interests=K,
            num_prototypes=L,
            max_seq_len=N,
            temperature=0.1,
            preset="paper",
            **{f: None for f in sine_options.SWITCHES},
        )
    )
    cfg.update(overrides)
    return cfg


def _encode(module, history, dropout_rng=None):
    """module(history, dropout_rng), op by op: on a CPU, compiling one small program per model
    variant costs more than the op-level compilations, which all variants (and the equation
    tests, same shapes) share."""
    return module(jnp.asarray(history), dropout_rng)


# Compiling a whole model is the slow part of these tests on a CPU; XLA's backend optimisation
# level 0 halves it and changes nothing the tests look at.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _sum_user_vector_loss(graphdef, params, rest, history, weights):
    out = nnx.merge(graphdef, params, rest)(history)
    return jnp.sum(out.user_vector * weights)


_loss_grad = jax.jit(
    jax.grad(_sum_user_vector_loss, argnums=1), static_argnums=0, compiler_options=_FAST_COMPILE
)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def inputs(rng):
    history = _history(rng)
    x = _rand(rng, B, N, D) * (history > 0)[..., None]
    return {"history": history, "mask": history > 0, "x": x, "pos": _rand(rng, N, D)}


# ---------------------------------------------------------------------------------------------
# Each equation against its numpy reference.


def test_masked_softmax_matches_reference_and_zeroes_all_masked_rows(rng):
    logits = _rand(rng, 4, 6, scale=3.0)
    mask = np.array([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1], [0] * 6], bool)
    got = np.asarray(layers.masked_softmax(jnp.asarray(logits), jnp.asarray(mask)))
    want = np.stack([np_masked_softmax_1d(l_, m_) for l_, m_ in zip(logits, mask)])
    np.testing.assert_allclose(got, want, **TOL)
    assert np.all(got[3] == 0.0)
    # Gradient of an all-masked row is finite (zero), not NaN.
    grad = jax.grad(lambda z: layers.masked_softmax(z, jnp.asarray(mask)).sum())(
        jnp.asarray(logits)
    )
    assert np.all(np.isfinite(np.asarray(grad)))


def test_eq1_self_attentive_pool(rng, inputs):
    w1, w2 = _rand(rng, D, D), _rand(rng, D)
    for pos in (None, inputs["pos"]):
        z, a = model_lib.self_attentive_pool(inputs["x"], inputs["mask"], w1, w2, pos)
        z_ref, a_ref = np_eq1(inputs["x"], inputs["mask"], w1, w2, pos)
        np.testing.assert_allclose(z, z_ref, **TOL)
        np.testing.assert_allclose(a, a_ref, **TOL)
        assert np.all(np.asarray(a)[~inputs["mask"]] == 0.0)


def test_eq2_concept_activation_matches_reference(rng):
    z, c = _rand(rng, B, D), _rand(rng, L, D)
    cu, idx, scores = model_lib.concept_activation(jnp.asarray(z), jnp.asarray(c), K)
    cu_ref, idx_ref = np_eq2(z, c, K)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_allclose(cu, cu_ref, **TOL)
    np.testing.assert_allclose(scores, np.take_along_axis(z @ c.T, idx_ref, 1), **TOL)


def test_eq2_top_k_picks_the_right_prototypes():
    # With C = I (L = D = 6) the scores are z itself.
    c = jnp.eye(6)
    z = jnp.array([[0.1, 0.5, -0.2, 0.9, 0.3, 0.0], [-1.0, -2.0, 3.0, 0.0, 2.5, -0.5]])
    cu, idx, scores = model_lib.concept_activation(z, c, 3)
    np.testing.assert_array_equal(idx, [[3, 1, 4], [2, 4, 3]])
    np.testing.assert_allclose(scores, [[0.9, 0.5, 0.3], [3.0, 2.5, 0.0]], **TOL)
    gate = np_sigmoid(np.array([[0.9, 0.5, 0.3], [3.0, 2.5, 0.0]]))
    want = np.eye(6)[np.array([[3, 1, 4], [2, 4, 3]])] * gate[..., None]
    np.testing.assert_allclose(cu, want, **TOL)


def test_eq3_intention_assignment(rng, inputs):
    cu, w3 = _rand(rng, B, K, D), _rand(rng, D, D)
    (norm1, ln1), (norm2, ln2) = _layernorm(rng), _layernorm(rng)
    got = model_lib.intention_assignment(inputs["x"], cu, w3, norm1, norm2)
    np.testing.assert_allclose(got, np_eq3(inputs["x"], cu, w3, ln1, ln2), **TOL)
    np.testing.assert_allclose(np.asarray(got).sum(-1), 1.0, **TOL)


def test_eq3_scaled_logits(rng, inputs):
    cu, w3 = _rand(rng, B, K, D), _rand(rng, D, D)
    (norm1, ln1), (norm2, ln2) = _layernorm(rng), _layernorm(rng)
    got = model_lib.intention_assignment(inputs["x"], cu, w3, norm1, norm2, scale=1.0 / D)
    np.testing.assert_allclose(got, np_eq3(inputs["x"], cu, w3, ln1, ln2, 1.0 / D), **TOL)


def test_cosine_logit_scale_is_the_cosine_of_the_normalised_vectors(rng):
    """With unit gains and zero biases, LN(a) . LN(b) / D is the cosine of the centred a and
    b (what the paper calls eq 3's product), so eq 7's logits are cosines / tau."""
    c_apt, phi = _rand(rng, B, D), _rand(rng, B, K, D)
    ones, zeros = np.ones(D, np.float32), np.zeros(D, np.float32)
    ln = lambda v: np_layernorm(v, ones, zeros)  # noqa: E731
    tau = 0.1
    _, e = model_lib.interest_aggregation(jnp.asarray(ln(c_apt)), jnp.asarray(ln(phi)), tau, 1.0 / D)
    centred = lambda v: v - v.mean(-1, keepdims=True)  # noqa: E731
    a, p = centred(c_apt), centred(phi)
    cos = np.einsum("bd,bkd->bk", a, p) / (
        np.linalg.norm(a, axis=-1)[:, None] * np.linalg.norm(p, axis=-1)
    )
    np.testing.assert_allclose(e, np_softmax(cos / tau), rtol=1e-3, atol=1e-4)
    _, e_printed = model_lib.interest_aggregation(jnp.asarray(ln(c_apt)), jnp.asarray(ln(phi)), tau)
    assert np.asarray(e_printed).max(-1).min() > 0.99  # as printed: one-hot


def test_summarize_interests_matches_a_count_by_hand(rng):
    e = np_softmax(_rand(rng, B, K, scale=3.0))
    assignment = np_softmax(_rand(rng, B, N, K, scale=3.0))
    mask = np.ones((B, N), bool)
    mask[0, :3] = False  # left padding
    mask[1] = False  # nothing but padding
    encoding = model_lib.UserEncoding(
        None, None, jnp.asarray(e), jnp.zeros((B, K), jnp.int32), jnp.asarray(assignment), None
    )
    summary = model_lib.summarize_interests(encoding, jnp.asarray(mask))
    want_k = [np.exp(-sum(p * np.log(p) for p in row)) for row in e]
    np.testing.assert_allclose(summary.effective_k, want_k, rtol=1e-5)
    want_used = [len({int(np.argmax(assignment[b, t])) for t in range(N) if mask[b, t]})
                 for b in range(B)]
    np.testing.assert_array_equal(summary.history_interests, want_used)
    one_hot = np.eye(K)[[0] * B]
    encoding = encoding._replace(interest_weights=jnp.asarray(one_hot))
    np.testing.assert_allclose(model_lib.summarize_interests(encoding, mask).effective_k, 1.0)
    uniform = encoding._replace(interest_weights=jnp.full((B, K), 1.0 / K))
    np.testing.assert_allclose(
        model_lib.summarize_interests(uniform, mask).effective_k, K, rtol=1e-6
    )
    assert model_lib.summarize_interests(encoding._replace(interest_weights=None), mask)[0] is None


def test_eq3_cosine_assignment(rng, inputs):
    cu = _rand(rng, B, K, D)
    got = model_lib.cosine_assignment(inputs["x"], cu)
    np.testing.assert_allclose(got, np_eq3_cosine(inputs["x"], cu), **TOL)


def test_eq4_interest_attention(rng, inputs):
    hidden = 3
    w1, w2 = _rand(rng, K, D, hidden), _rand(rng, K, hidden)
    got = model_lib.interest_attention(inputs["x"], inputs["mask"], inputs["pos"], w1, w2)
    want = np_eq4(inputs["x"], inputs["mask"], inputs["pos"], w1, w2)
    np.testing.assert_allclose(got, want, **TOL)
    sums = np.asarray(got).sum(1)  # [B, K]: 1 for histories with an item, 0 for all padding
    np.testing.assert_allclose(sums, inputs["mask"].any(1)[:, None] * np.ones(K), **TOL)


def test_eq4_gated_interest_attention(rng, inputs):
    hidden = 3
    w1, w2 = _rand(rng, D, hidden), _rand(rng, hidden, K)
    p_kt = np_softmax(_rand(rng, B, N, K))
    got = model_lib.gated_interest_attention(
        inputs["x"], inputs["mask"], inputs["pos"], w1, w2, p_kt
    )
    want = np_eq4_gated(inputs["x"], inputs["mask"], inputs["pos"], w1, w2, p_kt)
    np.testing.assert_allclose(got, want, **TOL)


def test_eq5_interest_embeddings(rng, inputs):
    p_kt = np_softmax(_rand(rng, B, N, K), -1)
    p_tk = np_eq4(inputs["x"], inputs["mask"], inputs["pos"], _rand(rng, K, D, D), _rand(rng, K, D))
    norm3, ln3 = _layernorm(rng)
    got = model_lib.interest_embeddings(p_kt, p_tk, inputs["x"], norm3)
    np.testing.assert_allclose(got, np_eq5(p_kt, p_tk, inputs["x"], ln3), **TOL)
    got_plain = model_lib.interest_embeddings(None, p_tk, inputs["x"])
    np.testing.assert_allclose(got_plain, np_eq5(None, p_tk, inputs["x"]), **TOL)


def test_eq6_intention_sequence_and_apt(rng, inputs):
    p_kt, cu = np_softmax(_rand(rng, B, N, K), -1), _rand(rng, B, K, D)
    w3, w4 = _rand(rng, D, D), _rand(rng, D)
    norm4, ln4 = _layernorm(rng)
    xhat, c_apt = model_lib.intention_sequence_and_apt(p_kt, cu, inputs["mask"], w3, w4, norm4)
    xhat_ref, c_apt_ref = np_eq6(p_kt, cu, inputs["mask"], w3, w4, ln4)
    np.testing.assert_allclose(xhat, xhat_ref, **TOL)
    np.testing.assert_allclose(c_apt, c_apt_ref, **TOL)
    # Reference-code variant: own [D, H] weights, items added to Xhat, positions in the keys.
    w, w4h = _rand(rng, D, 3), _rand(rng, 3)
    xhat, c_apt = model_lib.intention_sequence_and_apt(
        p_kt, cu, inputs["mask"], w, w4h, norm4, inputs["x"], inputs["pos"]
    )
    xhat_ref, c_apt_ref = np_eq6(p_kt, cu, inputs["mask"], w, w4h, ln4, inputs["x"], inputs["pos"])
    np.testing.assert_allclose(xhat, xhat_ref, **TOL)
    np.testing.assert_allclose(c_apt, c_apt_ref, **TOL)


def test_eq78_interest_aggregation(rng):
    c_apt, phi = _rand(rng, B, D), _rand(rng, B, K, D)
    v, e = model_lib.interest_aggregation(c_apt, phi, 0.1)
    v_ref, e_ref = np_eq78(c_apt, phi, 0.1)
    np.testing.assert_allclose(v, v_ref, **TOL)
    np.testing.assert_allclose(e, e_ref, **TOL)
    v, e = model_lib.interest_aggregation(c_apt, phi, 0.1, 1.0 / D)
    v_ref, e_ref = np_eq78(c_apt, phi, 0.1, 1.0 / D)
    np.testing.assert_allclose(v, v_ref, **TOL)
    np.testing.assert_allclose(e, e_ref, **TOL)


def test_dense_concat_aggregation(rng):
    c_apt, phi = _rand(rng, B, D), _rand(rng, B, K, D)
    kernel, bias = _rand(rng, 2 * D, D), _rand(rng, D)
    v, e = model_lib.dense_concat_aggregation(c_apt, phi, kernel, bias)
    v_ref, e_ref = np_dense_concat(c_apt, phi, kernel, bias)
    np.testing.assert_allclose(v, v_ref, **TOL)
    np.testing.assert_allclose(e, e_ref, **TOL)


# ---------------------------------------------------------------------------------------------
# The module.


@pytest.mark.parametrize(
    "preset", ["paper", "official", "default", "paper+cosine_scale", "official+projection"]
)
def test_module_matches_numpy_model(preset, rng):
    if preset == "paper+cosine_scale":
        opts = dataclasses.replace(sine_options.PRESETS["paper"], logit_scale="cosine")
    elif preset == "official+projection":
        opts = dataclasses.replace(sine_options.PRESETS["official"], output_projection=True)
    else:
        opts = sine_options.PRESETS[preset]
    module = _random_model(opts, seed=1)
    history = _history(rng)
    out = _encode(module, history)
    x = _encoder_reference(module, history) if opts.encoder_blocks else None
    want = np_sine(_params(module), history, opts, K, opts.temperature, x=x)
    for field, value in out._asdict().items():
        np.testing.assert_allclose(value, want[field], err_msg=field, **TOL)
    chex_shapes = {
        "user_vector": (B, D), "interests": (B, K, D), "interest_weights": (B, K),
        "prototype_ids": (B, K), "assignment": (B, N, K), "concept_attention": (B, N),
    }  # fmt: skip
    assert {f: v.shape for f, v in out._asdict().items()} == chex_shapes


def test_paper_module_equals_pure_functions_composed_by_hand(rng):
    module = _random_model(sine_options.SineOptions(), seed=2)
    history = jnp.asarray(_history(rng))
    out = _encode(module, history)

    @jax.jit
    def by_hand(history):
        mask = history > 0
        x = module.item_embedding[...][history] * mask[..., None]
        pos = module.position_embedding[...]
        w1, w2, w3 = module.concept_w1[...], module.concept_w2[...], module.w3[...]
        z, a = model_lib.self_attentive_pool(x, mask, w1, w2)
        cu, idx, _ = model_lib.concept_activation(z, module.prototypes[...], K)
        p_kt = model_lib.intention_assignment(x, cu, w3, module.norm1, module.norm2)
        wk1, wk2 = module.interest_w1[...], module.interest_w2[...]
        p_tk = model_lib.interest_attention(x, mask, pos, wk1, wk2)
        phi = model_lib.interest_embeddings(p_kt, p_tk, x, module.norm3)
        w4 = module.aggregation_w4[...]
        _, c_apt = model_lib.intention_sequence_and_apt(p_kt, cu, mask, w3, w4, module.norm4)
        v, e = model_lib.interest_aggregation(c_apt, phi, 0.1)
        return v, e, idx, p_kt, a

    v, e, idx, p_kt, a = by_hand(history)
    np.testing.assert_allclose(out.user_vector, v, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.interest_weights, e, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out.prototype_ids, idx)
    np.testing.assert_allclose(out.assignment, p_kt, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.concept_attention, a, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("preset", ["paper", "official"])
def test_padding_values_never_change_the_output(preset, rng):
    module = _random_model(sine_options.PRESETS[preset], seed=3)
    history = jnp.asarray(_history(rng))
    before = _encode(module, history)
    module.item_embedding[...] = module.item_embedding[...].at[0].set(100.0 * jnp.ones(D))
    after = _encode(module, history)
    for field in before._fields:
        np.testing.assert_array_equal(getattr(before, field), getattr(after, field), err_msg=field)


@pytest.mark.parametrize("preset", ["paper", "official"])
def test_extra_left_padding_never_changes_the_output(preset, rng):
    short = _random_model(sine_options.PRESETS[preset], seed=4)
    long = _random_model(sine_options.PRESETS[preset], seed=5, n=N + 2)
    _copy_shared_params(short, long)
    # The most recent item keeps its positional embedding: the rows of the short table are the
    # last rows of the long one.
    extra = jnp.asarray(_rand(rng, 2, D))
    long.position_embedding[...] = jnp.concatenate([extra, short.position_embedding[...]])
    history = _history(rng)
    out_short = _encode(short, history)
    out_long = _encode(long, np.pad(history, ((0, 0), (2, 0))))
    for field in ("user_vector", "interests", "interest_weights", "prototype_ids"):
        np.testing.assert_allclose(
            getattr(out_short, field), getattr(out_long, field), rtol=1e-6, atol=1e-6, err_msg=field
        )
    np.testing.assert_allclose(
        out_short.assignment, out_long.assignment[:, 2:], rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(
        out_short.concept_attention, out_long.concept_attention[:, 2:], rtol=1e-6, atol=1e-6
    )
    assert np.all(np.asarray(out_long.concept_attention[:, :2]) == 0.0)


def test_pure_functions_ignore_values_at_padded_positions(rng, inputs):
    """Eqs 1, 4, 5, 6 composed on X with garbage at padded positions give the same outputs."""
    w1, w2 = _rand(rng, D, D), _rand(rng, D)
    wk1, wk2 = _rand(rng, K, D, D), _rand(rng, K, D)
    w3, w4 = _rand(rng, D, D), _rand(rng, D)
    cu = _rand(rng, B, K, D)
    mask = inputs["mask"]

    @jax.jit
    def encode(x):
        z, _ = model_lib.self_attentive_pool(x, mask, w1, w2)
        p_kt = np_softmax(_rand(np.random.default_rng(9), B, N, K))  # fixed P(k|t)
        p_tk = model_lib.interest_attention(x, mask, inputs["pos"], wk1, wk2)
        phi = model_lib.interest_embeddings(p_kt, p_tk, x)
        _, c_apt = model_lib.intention_sequence_and_apt(p_kt, cu, mask, w3, w4, lambda y: y)
        return z, phi, c_apt

    garbage = np.where(mask[..., None], inputs["x"], _rand(rng, B, N, D, scale=50.0))
    for got, want in zip(encode(garbage), encode(inputs["x"])):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("preset", ["paper", "official"])
def test_all_padding_history_gives_finite_outputs(preset):
    module = _model(sine_options.PRESETS[preset])
    out = _encode(module, np.zeros((B, N), np.int32))
    for field, value in out._asdict().items():
        assert np.all(np.isfinite(np.asarray(value))), field
    np.testing.assert_array_equal(out.concept_attention, 0.0)
    np.testing.assert_allclose(out.interest_weights, 1.0 / K)


@pytest.mark.parametrize("preset", ["paper", "official"])
def test_gradients_reach_w1_w2_and_stay_finite_with_an_all_padding_row(preset, rng):
    """W1, W2 (eq 1) learn only through the sigmoid gate of eq 2: their gradient is non-zero.
    The batch holds an all-padding history (`_history`): every gradient stays finite."""
    module = _model(sine_options.PRESETS[preset])
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    history = jnp.asarray(_history(rng))
    weights = jnp.asarray(_rand(rng, B, D))
    grads = _loss_grad(graphdef, params, rest, history, weights)
    for path, leaf in nnx.to_flat_state(grads):
        assert np.all(np.isfinite(np.asarray(leaf[...]))), path
    norm_w1 = float(jnp.linalg.norm(grads["concept_w1"][...]))
    norm_w2 = float(jnp.linalg.norm(grads["concept_w2"][...]))
    logging.info("%s preset: |dL/dW1| = %.3g, |dL/dW2| = %.3g", preset, norm_w1, norm_w2)
    print(f"{preset} preset: |dL/dW1| = {norm_w1:.3g}, |dL/dW2| = {norm_w2:.3g}")
    assert norm_w1 > 0.0 and norm_w2 > 0.0


# ---------------------------------------------------------------------------------------------
# Finite-difference gradient checks, float64.


def _ln64(gain, bias):
    def norm(x):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / jnp.sqrt(var + 1e-6) * gain + bias

    return norm


def _paper_pipeline(x, mask, pos, p, norm_a, norm_b):
    """Eqs 1-8 (paper) composed from the pure functions; every intermediate is returned."""
    z, a = model_lib.self_attentive_pool(x, mask, p["w1"], p["w2"])
    cu, _, scores = model_lib.concept_activation(z, p["c"], K)
    p_kt = model_lib.intention_assignment(x, cu, p["w3"], norm_a, norm_b)
    p_tk = model_lib.interest_attention(x, mask, pos, p["wk1"], p["wk2"])
    phi = model_lib.interest_embeddings(p_kt, p_tk, x, norm_a)
    xhat, c_apt = model_lib.intention_sequence_and_apt(p_kt, cu, mask, p["w3"], p["w4"], norm_b)
    v, e = model_lib.interest_aggregation(c_apt, phi, 0.1)
    return {"a": a, "scores": scores, "cu": cu, "p_kt": p_kt, "p_tk": p_tk, "phi": phi,
            "xhat": xhat, "c_apt": c_apt, "v": v, "e": e}  # fmt: skip


def _official_pipeline(x, mask, pos, p, norm_a, norm_b):
    """The reference-code variants of eqs 1-8 composed from the pure functions."""
    z, a = model_lib.self_attentive_pool(x, mask, p["w1"], p["w2"], pos)
    cu, _, scores = model_lib.concept_activation(z, p["c"], K)
    p_kt = model_lib.cosine_assignment(x, cu)
    p_tk = model_lib.gated_interest_attention(x, mask, pos, p["wg1"], p["wg2"], p_kt)
    phi = model_lib.interest_embeddings(None, p_tk, x)
    xhat, c_apt = model_lib.intention_sequence_and_apt(
        p_kt, cu, mask, p["wa"], p["wa4"], norm_b, x, pos
    )
    v, e = model_lib.dense_concat_aggregation(c_apt, phi, p["kernel"], p["bias"])
    return {"a": a, "scores": scores, "cu": cu, "p_kt": p_kt, "p_tk": p_tk, "phi": phi,
            "xhat": xhat, "c_apt": c_apt, "v": v, "e": e}  # fmt: skip


_PIPELINE_SHAPES = {
    "a": (B, N), "scores": (B, K), "cu": (B, K, D), "p_kt": (B, N, K), "p_tk": (B, N, K),
    "phi": (B, K, D), "xhat": (B, N, D), "c_apt": (B, D), "v": (B, D), "e": (B, K),
}  # fmt: skip


@pytest.mark.parametrize("pipeline", [_paper_pipeline, _official_pipeline])
def test_finite_difference_gradients_float64(pipeline):
    """Reverse-mode gradients of every pure function (composed; every intermediate output
    enters the checked scalar) against central finite differences along random directions."""
    rng = np.random.default_rng(5)
    r = lambda *s: rng.standard_normal(s) * 0.5  # float64 numpy
    mask = _history(rng) > 0
    # Non-zero everywhere: at an exactly zero X_t, LN1(X_t W3) has curvature ~ 1/sqrt(eps)
    # and a finite difference of step 1e-4 is not accurate there.
    args = {
        "x": r(B, N, D), "pos": r(N, D), "w1": r(D, D), "w2": r(D), "c": r(L, D),
        "w3": r(D, D), "wk1": r(K, D, 3), "wk2": r(K, 3), "w4": r(D), "wg1": r(D, 3),
        "wg2": r(3, K), "wa": r(D, 3), "wa4": r(3), "kernel": r(2 * D, D), "bias": r(D),
    }  # fmt: skip
    gains = [r(D) + 1.0, r(D), r(D) + 1.0, r(D)]
    cotangent = {name: r(*shape) for name, shape in _PIPELINE_SHAPES.items()}
    eps = 1e-4

    with jax.enable_x64(True):

        @functools.partial(jax.jit, compiler_options=_FAST_COMPILE)
        @jax.value_and_grad
        def scalar(a):
            norm_a, norm_b = _ln64(*gains[:2]), _ln64(*gains[2:])
            out = pipeline(a["x"], mask, a["pos"], a, norm_a, norm_b)
            return sum(jnp.vdot(cotangent[name], out[name]) for name in cotangent)

        value, grad = scalar(args)
        assert value.dtype == jnp.float64
        for _ in range(3):
            d = {name: r(*a.shape) for name, a in args.items()}
            plus, _ = scalar({name: a + eps * d[name] for name, a in args.items()})
            minus, _ = scalar({name: a - eps * d[name] for name, a in args.items()})
            reverse = sum(np.vdot(grad[name], d[name]) for name in args)
            np.testing.assert_allclose(reverse, (plus - minus) / (2 * eps), rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Options, presets and build_model.


_ALTERNATIVES = {
    "attention_hidden": [5],
    "assignment": ["cosine"],
    "interest_attention": ["shared_gated"],
    "interest_layernorm": [False],
    "aggregation_attention": ["own", "own_plus_items"],
    "aggregation": ["dense_concat"],
    "positional_in_concept_attention": [True],
    "input_table": ["separate"],
    "logit_scale": ["cosine"],
    "output_projection": [True],
    "encoder_blocks": [1],
    "dropout": [0.2],
}


def test_every_switch_has_an_alternative_under_test():
    assert set(_ALTERNATIVES) == set(sine_options.SWITCHES)


@pytest.mark.parametrize(
    "field,value", [(f, v) for f, values in _ALTERNATIVES.items() for v in values]
)
def test_each_switch_changes_the_output(field, value, rng):
    paper = _random_model(sine_options.SineOptions(), seed=6)
    switched = _random_model(dataclasses.replace(sine_options.SineOptions(), **{field: value}), 7)
    _copy_shared_params(paper, switched)  # only the switch (and its own weights) differ
    history = jnp.asarray(_history(rng))
    key = jax.random.key(0)  # as at training: the dropout switch acts only then
    diff = np.abs(np.asarray(
        _encode(paper, history, key).user_vector - _encode(switched, history, key).user_vector
    )).max()
    assert diff > 1e-4, (field, value, diff)


def _encoder_reference(module, history):
    """[B, n, D] the encoder's output by SASRec's block sequence (one head; tested against
    numpy in baselines_single_test.py) over X sqrt(D) + P, padding rows zero."""
    enc = module.encoder
    blocks = sasrec.BlockWeights(*(getattr(enc, f)[...] for f in sasrec.BlockWeights._fields))
    table = np.asarray(module.item_embedding[...])
    x_in = (table[history] * np.sqrt(D) + np.asarray(enc.position_embedding[...]))
    x_in = x_in * (history > 0)[..., None]
    x = sasrec.sasrec_sequence(
        jnp.asarray(x_in, jnp.float32), jnp.asarray(history > 0), blocks,
        enc.final_norm_scale[...], enc.final_norm_bias[...], 1,
    )
    return np.asarray(x) * (history > 0)[..., None]


def test_encoder_blocks_feed_sasrecs_sequence_to_the_equations(rng):
    """encoder_blocks=1: X_t is SASRec's block output (one head) over X sqrt(D) + P, and
    eqs 1-8 then run on it as on raw embeddings."""
    opts = dataclasses.replace(sine_options.PRESETS["default"], encoder_blocks=1)
    module = _random_model(opts, seed=11)
    history = _history(rng)
    want_x = _encoder_reference(module, history)
    got_x = module.encoder(module.item_embedding[...], jnp.asarray(history), 0.0, None)
    np.testing.assert_allclose(got_x, want_x, **TOL)
    out = _encode(module, history)
    want = np_sine(_params(module), history, opts, K, opts.temperature, x=want_x)
    for field, value in out._asdict().items():
        np.testing.assert_allclose(value, want[field], err_msg=field, **TOL)


def test_output_projection_starts_as_the_identity(rng):
    """A freshly built model with the projection scores exactly as the one without it."""
    history = jnp.asarray(_history(rng))
    plain = _model(sine_options.SineOptions(), seed=3)
    projected = _model(sine_options.SineOptions(output_projection=True), seed=3)
    np.testing.assert_array_equal(projected.output_w[...], np.eye(D))
    np.testing.assert_allclose(
        _encode(projected, history).user_vector, _encode(plain, history).user_vector, **TOL
    )
    with pytest.raises(ConfigError, match="output_projection"):
        sine_options.SineOptions(output_projection=True, aggregation="label_aware")


def test_separate_input_table_only_changes_where_the_history_is_read(rng):
    """input_table=separate: the encoder reads X_t from input_embedding and nothing else
    changes (it equals the shared model whose item table is that input table); the item table
    no longer enters the user vector."""
    separate = _random_model(sine_options.SineOptions(input_table="separate"), seed=8)
    shared = _random_model(sine_options.SineOptions(), seed=9)
    _copy_shared_params(separate, shared)
    shared.item_embedding.set_value(separate.input_embedding[...])
    history = jnp.asarray(_history(rng))
    want = _encode(shared, history)
    got = _encode(separate, history)
    for field, value in got._asdict().items():
        np.testing.assert_allclose(value, getattr(want, field), err_msg=field, **TOL)
    separate.item_embedding.set_value(separate.item_embedding[...] + 1.0)
    np.testing.assert_allclose(_encode(separate, history).user_vector, got.user_vector, **TOL)
    built = model_lib.build_model(_model_config(input_table="separate"), M, nnx.Rngs(0))
    paper = model_lib.build_model(_model_config(), M, nnx.Rngs(0))
    assert built.input_embedding[...].shape == built.item_embedding[...].shape == (M + 1, D)
    assert paper.input_embedding is None
    assert float(jnp.abs(built.input_embedding[0]).max()) == 0.0  # padding row
    assert not np.allclose(built.input_embedding[...], built.item_embedding[...])
    # the same initial values as the shared model for every parameter it has too
    np.testing.assert_array_equal(built.item_embedding[...], paper.item_embedding[...])
    np.testing.assert_array_equal(built.prototypes[...], paper.prototypes[...])


def test_official_preset_runs_jitted(rng):
    module = _model(sine_options.PRESETS["official"])
    out = _encode(module, _history(rng))
    assert out.user_vector.shape == (B, D)
    assert module.w3 is None and module.norm1 is None and module.norm3 is None
    assert module.interest_w1[...].shape == (D, 512)
    assert module.aggregation_w[...].shape == (D, 512)
    assert module.query_kernel[...].shape == (2 * D, D)


def test_resolve_switches():
    assert sine_options.resolve_switches(_model_config()) == sine_options.SineOptions()  # paper
    # the default preset (also when none is named): the printed equations with the adopted
    # deviations, and only those
    unnamed = _model_config()
    del unnamed["preset"]
    default_options = sine_options.resolve_switches(unnamed)
    assert default_options == sine_options.resolve_switches(_model_config(preset="default"))
    assert default_options == dataclasses.replace(
        sine_options.SineOptions(), assignment="cosine", logit_scale="cosine", encoder_blocks=2,
        dropout=0.2,
    )
    assert (
        sine_options.resolve_switches(_model_config(preset="official"))
        == sine_options.PRESETS["official"]
    )
    opts = sine_options.resolve_switches(
        _model_config(
            preset="official", assignment="layernorm", attention_hidden=0, temperature=0.5
        )
    )
    assert opts == dataclasses.replace(
        sine_options.PRESETS["official"], assignment="layernorm", attention_hidden=0, temperature=0.5
    )
    assert hash(opts) == hash(dataclasses.replace(opts))


def test_build_model_uses_config():
    module = model_lib.build_model(_model_config(num_interests=3), num_items=M, rngs=nnx.Rngs(0))
    assert module.item_embedding[...].shape == (M + 1, D)
    assert module.prototypes[...].shape == (L, D)
    assert module.position_embedding[...].shape == (N, D)
    assert module.interest_w1[...].shape == (3, D, D)
    np.testing.assert_array_equal(module.item_embedding[...][0], 0.0)
    # Glorot-uniform: |w| <= sqrt(6 / (fan_in + fan_out)).
    assert np.abs(np.asarray(module.prototypes[...])).max() <= np.sqrt(6 / (L + D))
    assert np.abs(np.asarray(module.concept_w2[...])).max() <= np.sqrt(6 / (D + 1))


def test_initialisation_is_glorot_uniform_over_its_whole_range():
    """At sizes where the sample shows it: each matrix [a, b] fills U(-l, l) with
    l = sqrt(6 / (a + b)) (standard deviation l / sqrt(3), extremes near +-l)."""
    d, num_prototypes, n, num_items = 32, 40, 20, 500
    module = model_lib.build_model(
        _model_config(embed_dim=d, num_prototypes=num_prototypes, max_seq_len=n),
        num_items=num_items, rngs=nnx.Rngs(0),
    )
    shapes = {  # (values, fan_in + fan_out)
        "item_embedding": (module.item_embedding[...][1:], num_items + 1 + d),
        "prototypes": (module.prototypes[...], num_prototypes + d),
        "position_embedding": (module.position_embedding[...], n + d),
        "concept_w1": (module.concept_w1[...], 2 * d),
        "w3": (module.w3[...], 2 * d),
    }
    for name, (values, fans) in shapes.items():
        values, limit = np.asarray(values).ravel(), np.sqrt(6 / fans)
        assert values.size >= 640, name
        assert np.abs(values).max() <= limit, name
        assert min(-values.min(), values.max()) > 0.95 * limit, name
        np.testing.assert_allclose(values.std(), limit / np.sqrt(3), rtol=0.08, err_msg=name)
        assert abs(values.mean()) < 0.1 * limit, name


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            {"num_interests": 8, "num_prototypes": 4},
            "model.num_interests=8 must be <= model.num_prototypes=4",
        ),
        ({"num_interests": 0}, "model.num_interests=0 must be an integer >= 1"),
        ({"max_seq_len": 0}, "model.max_seq_len=0 must be an integer >= 1"),
        ({"embed_dim": 0}, "model.embed_dim=0 must be an integer >= 1"),
        ({"num_prototypes": 0}, "model.num_prototypes=0 must be an integer >= 1"),
        ({"name": "mind"}, "model.name='mind' must be one of ('sine', 'sine_cate', 'sine_label')"),
        ({"preset": "tf"}, "model.preset='tf' must be one of ('default', 'paper', 'official')"),
        ({"assignment": "dot"}, "model.assignment='dot' must be one of ('layernorm', 'cosine')"),
        ({"interest_attention": "x"}, "model.interest_attention='x' must be one of"),
        ({"aggregation_attention": "x"}, "model.aggregation_attention='x' must be one of"),
        (
            {"aggregation": "x"},
            "model.aggregation='x' must be one of ('temperature', 'dense_concat', 'label_aware')",
        ),
        ({"attention_hidden": -1}, "model.attention_hidden=-1 must be an integer >= 0"),
        ({"interest_layernorm": "yes"}, "model.interest_layernorm='yes' must be True or False"),
        ({"temperature": 0.0}, "model.temperature=0.0 must be a number > 0"),
    ],
)
def test_build_model_rejects_bad_config(overrides, message):
    with pytest.raises(ConfigError) as info:
        model_lib.build_model(_model_config(**overrides), num_items=M, rngs=nnx.Rngs(0))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# The ablations of Table 6: SINE-cate and SINE-label.


def test_category_prototypes_are_the_category_means():
    rng = np.random.default_rng(7)
    table = rng.normal(size=(M + 3, D)).astype(np.float32)
    categories = rng.integers(-1, 4, M + 3).astype(np.int32)
    categories[3] = 4  # category 4 has one item; category 5 has none
    got = np.asarray(model_lib.category_prototypes(jnp.asarray(table), jnp.asarray(categories), 6))
    for c in range(6):
        rows = table[categories == c]
        want = rows.mean(axis=0) if len(rows) else np.zeros(D)
        np.testing.assert_allclose(got[c], want, **TOL)


def test_sine_cate_pool_is_made_of_categories():
    categories = np.arange(M + 1, dtype=np.int32) % 5
    categories[0] = -1
    module = model_lib.build_model(
        _model_config(name="sine_cate"), num_items=M, rngs=nnx.Rngs(0), table_rows=M + 4,
        item_categories=categories,
    )
    assert module.prototypes is None and module.num_prototypes == 5
    np.testing.assert_array_equal(module.item_category[...][: M + 1], categories)
    np.testing.assert_array_equal(module.item_category[...][M + 1 :], -1)  # pad rows: none
    encoding = _encode(module, _history(np.random.default_rng(0)))
    assert encoding.user_vector.shape == (B, D)
    assert np.all(np.asarray(encoding.prototype_ids) < 5)
    # The pool follows the item table: moving one category's items moves its prototype.
    table = module.item_embedding[...]
    before = model_lib.category_prototypes(table, module.item_category[...], 5)
    moved = table + jnp.where((module.item_category[...] == 2)[:, None], 1.0, 0.0)
    after = model_lib.category_prototypes(moved, module.item_category[...], 5)
    np.testing.assert_allclose(after[2] - before[2], np.ones(D), **TOL)
    np.testing.assert_allclose(np.delete(after - before, 2, axis=0), 0.0, **TOL)


@pytest.mark.parametrize(
    "categories, message",
    [
        (None, "model.name='sine_cate' needs item categories"),
        (np.full(M + 1, -1, np.int32), "model.name='sine_cate' needs item categories"),
        (np.r_[-1, np.zeros(M, np.int32)], "model.num_interests=2 must be <= the 1 item categories"),
    ],
)
def test_sine_cate_without_enough_categories_is_refused(categories, message):
    with pytest.raises(ConfigError, match=message):
        model_lib.build_model(
            _model_config(name="sine_cate"), num_items=M, rngs=nnx.Rngs(0),
            item_categories=categories,
        )


def test_sine_label_returns_the_interests_and_has_no_aggregation_weights():
    module = model_lib.build_model(_model_config(name="sine_label"), M, nnx.Rngs(0))
    assert module.norm4 is None and module.aggregation_w4 is None
    sine = model_lib.build_model(_model_config(), M, nnx.Rngs(0))
    history = jnp.asarray(_history(np.random.default_rng(1)))
    query = module.encode(history)
    assert query.shape == (B, K, D)
    # Eqs 1-5 are SINE's: with the same weights the interests are the same.
    np.testing.assert_allclose(query, sine(history).interests, **TOL)
    assert sine.encode(history).shape == (B, D)


def test_a_variant_name_conflicting_with_a_switch_is_refused():
    with pytest.raises(ConfigError, match="model.name='sine_label' sets model.aggregation="):
        model_lib.build_model(
            _model_config(name="sine_label", aggregation="temperature"), M, nnx.Rngs(0)
        )
