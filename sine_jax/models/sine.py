"""SINE: Sparse-Interest Network (Tan et al., WSDM 2021), equations 1-8.

Shape legend: B batch, n history length, L prototypes, K interests, D embedding dim,
H attention hidden size, M items. Histories are left-padded with the padding id 0, so the
most recent item is always at position n - 1; `mask` is `history > 0` [B, n].

The math is in small pure functions (no Flax, no flags) that a notebook can import; `SINE`
owns the parameters and composes them according to `SineOptions` (`sine_jax.sine_options`,
with the presets and their resolution). Three presets:

* "default": the paper's equations with the deviations that passed the decision rule
  (at least +0.5 points of mean validation HR@10 over 3 seeds on both the ML-1M subset
  and ML-100K; `sine_options.ADOPTED`): eq 3's cosine assignment, the cosine scale of the
  LayerNorm products of eqs 3 and 7, two causal self-attention blocks over the history
  before eq 1 and dropout 0.2.
* "paper": the equations as printed.
* "official": the choices of the authors' TensorFlow code (`Qiaoyut/SINE`, `model.py`,
  `Model_SINE`), one switch each; see `SineOptions` for what each switch does and how the
  spec's wording was read.

Initialization (as the reference code, whose `tf.get_variable` / `tf.layers.dense` default
to Glorot-uniform): every table and matrix (item embeddings, prototypes, positional
embeddings, attention and dense weights) is Glorot-uniform with fan-in/fan-out taken from its
two trailing axes (vectors such as W2 are treated as [H, 1] matrices, per-interest stacks
[K, D, H] as K separate matrices), i.e. U(-a, a) with a = sqrt(6 / (fan_in + fan_out)); biases
are zeros; LayerNorm gains are ones and biases zeros. Row 0 of the item table (padding) starts
at zero; the model also zeroes padded positions of X, so that row never influences an output
and never receives a gradient.
"""

import functools
import itertools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sine_jax.errors import ConfigError
from sine_jax.models import sasrec
from sine_jax.sine_options import SINE_NAMES, SineOptions, resolve_switches
from sine_jax.models.layers import (
    Constant,
    dropout,
    embed_history,
    init_item_table,
    masked_softmax,
    require_int,
)

Norm = Callable[[jax.Array], jax.Array]

# Temperature of the "cosine" intention assignment (the reference code's fixed 0.07).
COSINE_TEMPERATURE = 0.07


# ---------------------------------------------------------------------------------------------
# Pure functions.


def self_attentive_pool(
    x: jax.Array,
    mask: jax.Array,
    w1: jax.Array,
    w2: jax.Array,
    pos: jax.Array | None = None,
    *,
    x_w1: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Eq 1: a = softmax_t(tanh(X W1) W2) over valid positions; z = a^T X.

    Args:
        x: [B, n, D] item embeddings (the values).
        mask: [B, n] boolean, True at real items.
        w1: [D, H] hidden weights (H = D in the paper).
        w2: [H] output weights.
        pos: optional [n, D] positional embeddings added to the attention input only (the
            reference code's choice); the values stay `x`.
        x_w1: optional [B, n, H] X W1 computed elsewhere (`project_items`); else x @ w1.

    Returns:
        z: [B, D] pooled vector; a: [B, n] attention weights (zeros where masked).
    """
    projected = x @ w1 if x_w1 is None else x_w1
    if pos is not None:
        projected = projected + pos @ w1
    return _attention_pool(projected, x, mask, w2)


def _attention_pool(
    projected: jax.Array, values: jax.Array, mask: jax.Array, w_out: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """a = masked softmax_t(tanh(projected) w_out); returns (a^T values [B, D], a [B, n]).

    `projected` [B, n, H] is the attention input times the hidden weights; `values` [B, n, D].
    """
    a = masked_softmax(jnp.tanh(projected) @ w_out, mask, axis=-1)  # [B, n]
    return jnp.einsum("bn,bnd->bd", a, values), a


def category_prototypes(
    table: jax.Array, item_category: jax.Array, num_categories: int
) -> jax.Array:
    """SINE-cate's pool: prototype c = the mean embedding of the items of category c.

    Args:
        table: [R, D] item table.
        item_category: int32 [R] each row's category in 0..L-1; -1 for padding, pad rows
            and items without a category (they join no prototype).
        num_categories: L.

    Returns:
        [L, D] category centroids (a category without items is a zero row).
    """
    sums = jax.ops.segment_sum(table, item_category, num_segments=num_categories)  # [L, D]
    counts = jax.ops.segment_sum(
        jnp.ones_like(item_category, table.dtype), item_category, num_segments=num_categories
    )
    return sums / jnp.maximum(counts, 1.0)[:, None]


def concept_activation(
    z: jax.Array, prototypes: jax.Array, num_interests: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Eq 2: s = C z, idx = top-K(s), C^u = C[idx] * sigmoid(s[idx]).

    The selection is discrete; z (hence eq 1's W1, W2) gets gradients only through the
    sigmoid gate.

    Args:
        z: [B, D] virtual concept vector from eq 1.
        prototypes: [L, D] the prototype pool C.
        num_interests: K <= L.

    Returns:
        c_u: [B, K, D] gated selected prototypes, slot k = k-th largest score.
        idx: [B, K] int32 prototype ids in descending score order.
        scores: [B, K] the selected raw scores s[idx] (before the sigmoid), descending.
    """
    s = z @ prototypes.T  # [B, L]
    scores, idx = jax.lax.top_k(s, num_interests)  # [B, K] each, descending
    c_u = prototypes[idx] * jax.nn.sigmoid(scores)[..., None]  # [B, K, D]
    return c_u, idx, scores


def intention_assignment(
    x: jax.Array, c_u: jax.Array, w3: jax.Array, norm_x: Norm, norm_c: Norm,
    *, x_w3: jax.Array | None = None, scale: float = 1.0,
) -> jax.Array:
    """Eq 3: P(k|t) = softmax_k(scale * LN1(X_t W3) . LN2(C^u_k)).

    The paper calls this product a cosine. LayerNorm'd vectors have norm about sqrt(D), so the
    printed product is about D times the cosine (scale 1); scale = 1 / D makes it the cosine.

    Args:
        x: [B, n, D] item embeddings.
        c_u: [B, K, D] activated prototypes from eq 2.
        w3: [D, D].
        norm_x: LayerNorm1 (learnable gain and bias), applied over the last axis.
        norm_c: LayerNorm2.
        x_w3: optional [B, n, D] X W3 computed elsewhere (`project_items`); else x @ w3.
        scale: multiplies the logits (1 as printed; 1 / D: the cosine).

    Returns:
        p_kt: [B, n, K], each position's distribution over the K selected slots.
    """
    projected = x @ w3 if x_w3 is None else x_w3
    logits = scale * jnp.einsum("bnd,bkd->bnk", norm_x(projected), norm_c(c_u))  # [B, n, K]
    return jax.nn.softmax(logits, axis=-1)


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """x / ||x|| over `axis`, as `tf.nn.l2_normalize` (finite for a zero vector)."""
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), eps))


def cosine_assignment(
    x: jax.Array, c_u: jax.Array, temperature: float = COSINE_TEMPERATURE
) -> jax.Array:
    """Eq 3 as in the reference code: P(k|t) = softmax_k(cos(X_t, C^u_k) / temperature).

    There is no W3 and no LayerNorm; the cosine ignores the sigmoid gate of eq 2.

    Args:
        x: [B, n, D] item embeddings.
        c_u: [B, K, D] activated prototypes.
        temperature: divides the cosines (0.07 in the reference code).

    Returns:
        p_kt: [B, n, K].
    """
    logits = jnp.einsum("bnd,bkd->bnk", l2_normalize(x), l2_normalize(c_u)) / temperature
    return jax.nn.softmax(logits, axis=-1)


def interest_attention(
    x: jax.Array, mask: jax.Array, pos: jax.Array, w1: jax.Array, w2: jax.Array,
    *, x_w1: jax.Array | None = None,
) -> jax.Array:
    """Eq 4: P(t|k) = softmax_t(tanh((X + pos) W_{k,1}) W_{k,2}), one MLP per interest k.

    All K MLPs run as one contraction over a [D, K*H] weight.

    Args:
        x: [B, n, D] item embeddings.
        mask: [B, n] boolean.
        pos: [n, D] learned positional embeddings, added to the attention input.
        w1: [K, D, H] per-interest hidden weights (H = D in the paper).
        w2: [K, H] per-interest output weights.
        x_w1: optional [B, n, K, H] X W_{k,1} computed elsewhere (`project_items`).

    Returns:
        p_tk: [B, n, K], for each k a distribution over the valid positions t.
    """
    projected = jnp.einsum("bnd,kdh->bnkh", x, w1) if x_w1 is None else x_w1
    hidden = jnp.tanh(projected + jnp.einsum("nd,kdh->nkh", pos, w1))  # [B, n, K, H]
    logits = jnp.einsum("bnkh,kh->bnk", hidden, w2)  # [B, n, K]
    return masked_softmax(logits, mask[..., None], axis=1)


def gated_interest_attention(
    x: jax.Array,
    mask: jax.Array,
    pos: jax.Array,
    w1: jax.Array,
    w2: jax.Array,
    p_kt: jax.Array,
    *,
    x_w1: jax.Array | None = None,
) -> jax.Array:
    """Eq 4 as in the reference code: one shared MLP D -> H -> K whose logits are multiplied
    by P(k|t) before the masked softmax over t.

    Args:
        x: [B, n, D] item embeddings.
        mask: [B, n] boolean.
        pos: [n, D] positional embeddings, added to the attention input.
        w1: [D, H] shared hidden weights.
        w2: [H, K] shared output weights (one column per interest slot).
        p_kt: [B, n, K] the intention assignment of eq 3.
        x_w1: optional [B, n, H] X W1 computed elsewhere (`project_items`); else x @ w1.

    Returns:
        p_tk: [B, n, K] (already weighted by P(k|t) inside the softmax).
    """
    projected = x @ w1 if x_w1 is None else x_w1
    logits = (jnp.tanh(projected + pos @ w1) @ w2) * p_kt  # [B, n, K]
    return masked_softmax(logits, mask[..., None], axis=1)


def interest_embeddings(
    p_kt: jax.Array | None, p_tk: jax.Array, x: jax.Array, norm: Norm | None = None
) -> jax.Array:
    """Eq 5: phi_k = LN3(sum_t P(k|t) P(t|k) X_t), with the raw X_t as values.

    Args:
        p_kt: [B, n, K] from eq 3, or None when P(t|k) already contains it (the reference
            code's gated attention), so the weights are P(t|k) alone.
        p_tk: [B, n, K] from eq 4 (zero at padded positions).
        x: [B, n, D] item embeddings.
        norm: LayerNorm3, or None for no normalisation (the reference code).

    Returns:
        phi: [B, K, D] interest embeddings.
    """
    weights = p_tk if p_kt is None else p_kt * p_tk  # [B, n, K]
    phi = jnp.einsum("bnk,bnd->bkd", weights, x)
    return phi if norm is None else norm(phi)


def intention_sequence_and_apt(
    p_kt: jax.Array,
    c_u: jax.Array,
    mask: jax.Array,
    w_hidden: jax.Array,
    w_out: jax.Array,
    norm: Norm,
    items: jax.Array | None = None,
    pos: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Eq 6: Xhat = P C^u; C_apt = LN4(softmax_t(tanh(Xhat W) w)^T Xhat), masked over t.

    In the paper W is eq 3's W3 (the literal text) and w is W4 [D].

    Args:
        p_kt: [B, n, K] intention assignment (eq 3).
        c_u: [B, K, D] gated prototypes (eq 2).
        mask: [B, n] boolean.
        w_hidden: [D, H] (W3 in the paper, H = D).
        w_out: [H] (W4 in the paper).
        norm: LayerNorm4.
        items: optional [B, n, D] item embeddings added to Xhat (the reference code).
        pos: optional [n, D] positional embeddings added to the attention input only.

    Returns:
        xhat: [B, n, D] the intention sequence (including `items` when given);
        c_apt: [B, D] the predicted next intention.
    """
    xhat = jnp.einsum("bnk,bkd->bnd", p_kt, c_u)
    # Xhat W = P (C^u W): K rows per user go through W instead of n.
    projected = jnp.einsum("bnk,bkh->bnh", p_kt, c_u @ w_hidden)  # [B, n, H]
    if items is not None:
        xhat = xhat + items
        projected = projected + items @ w_hidden
    if pos is not None:
        projected = projected + pos @ w_hidden
    pooled, _ = _attention_pool(projected, xhat, mask, w_out)  # [B, D]
    return xhat, norm(pooled)


def interest_aggregation(
    c_apt: jax.Array, phi: jax.Array, temperature: float, scale: float = 1.0
) -> tuple[jax.Array, jax.Array]:
    """Eqs 7-8: e = softmax_k(scale * C_apt . phi_k / tau); v = sum_k e_k phi_k.

    C_apt and phi_k are LayerNorm outputs (norm about sqrt(D)): as printed (scale 1) the
    logits are about D / tau times a cosine, hundreds at D = 128 and tau = 0.1, and e is
    one-hot; scale = 1 / D makes the product the cosine, logits within about +-1 / tau.

    Args:
        c_apt: [B, D] predicted intention (eq 6).
        phi: [B, K, D] interest embeddings (eq 5).
        temperature: tau (0.1 in the paper).
        scale: multiplies the products (1 as printed; 1 / D: the cosine).

    Returns:
        v: [B, D] user vector; e: [B, K] interest weights.
    """
    logits = scale * jnp.einsum("bd,bkd->bk", c_apt, phi) / temperature  # [B, K]
    e = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bk,bkd->bd", e, phi), e


def dense_concat_aggregation(
    c_apt: jax.Array, phi: jax.Array, kernel: jax.Array, bias: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Eqs 7-8 as in the reference code (`labeled_attention`): the query is
    q = Dense(concat[mean_k phi_k, C_apt]); e = softmax_k(phi_k . q) (no temperature);
    v = sum_k e_k phi_k.

    Args:
        c_apt: [B, D] predicted intention (eq 6).
        phi: [B, K, D] interest embeddings.
        kernel: [2 D, D] dense weights.
        bias: [D] dense bias.

    Returns:
        v: [B, D] user vector; e: [B, K] interest weights.
    """
    query = jnp.concatenate([phi.mean(axis=1), c_apt], axis=-1) @ kernel + bias  # [B, D]
    e = jax.nn.softmax(jnp.einsum("bd,bkd->bk", query, phi), axis=-1)
    return jnp.einsum("bk,bkd->bd", e, phi), e


# ---------------------------------------------------------------------------------------------
# Module.


class UserEncoding(NamedTuple):
    """What `SINE.__call__` returns.

    Attributes:
        user_vector: [B, D] v (eq 8), the query against the item table (None for SINE-label).
        interests: [B, K, D] phi (eq 5).
        interest_weights: [B, K] e (eq 7) (None for SINE-label).
        prototype_ids: [B, K] int32 selected prototypes, descending score (eq 2).
        assignment: [B, n, K] P(k|t) (eq 3).
        concept_attention: [B, n] a (eq 1), zero at padding.
    """

    user_vector: jax.Array
    interests: jax.Array
    interest_weights: jax.Array
    prototype_ids: jax.Array
    assignment: jax.Array
    concept_attention: jax.Array


class InterestSummary(NamedTuple):
    """How many interests each user really has (`summarize_interests`).

    Attributes:
        effective_k: [B] exp(entropy of e_k): 1 when one interest makes the user vector, K
            when all K weigh the same (None for SINE-label, which has no e).
        history_interests: [B] how many distinct interests the history's items are assigned
            to (argmax_k P(k|t) over the real items).
        prototype_ids: [B, K] int32 the prototypes each user activated (eq 2).
    """

    effective_k: jax.Array | None
    history_interests: jax.Array
    prototype_ids: jax.Array


def summarize_interests(encoding: UserEncoding, mask: jax.Array) -> InterestSummary:
    """The `InterestSummary` of an encoding of histories whose real items are `mask` [B, n]."""
    e = encoding.interest_weights
    effective_k = None
    if e is not None:
        entropy = -jnp.sum(jnp.where(e > 0, e * jnp.log(jnp.where(e > 0, e, 1.0)), 0.0), -1)
        effective_k = jnp.exp(entropy)  # [B]
    k = encoding.assignment.shape[-1]
    assigned = jax.nn.one_hot(jnp.argmax(encoding.assignment, -1), k, dtype=bool)  # [B, n, K]
    used = jnp.any(assigned & mask[..., None], axis=1)  # [B, K]
    return InterestSummary(effective_k, used.sum(-1), encoding.prototype_ids)


# (shape, fan_in, fan_out) of each Glorot-initialised parameter, by attribute name.
ParamSpecs = dict[str, tuple[tuple[int, ...], int, int]]


def _param_specs(
    num_items: int, table_rows: int, d: int, k: int, num_prototypes: int, n: int,
    options: SineOptions,
) -> ParamSpecs:
    """Shapes and Glorot fans of SINE's parameters (vectors count as [size, 1] matrices,
    per-interest stacks [K, D, H] as K matrices [D, H]; the item table's fans ignore its
    padding rows)."""
    h = options.attention_hidden or d
    specs = {
        "item_embedding": ((table_rows, d), num_items + 1, d),
        "prototypes": ((num_prototypes, d), num_prototypes, d),
        "position_embedding": ((n, d), n, d),
        "concept_w1": ((d, h), d, h),
        "concept_w2": ((h,), h, 1),
    }
    if options.prototype_pool == "categories":
        del specs["prototypes"]
    if options.input_table == "separate":
        specs["input_embedding"] = specs["item_embedding"]
    eq6 = options.aggregation != "label_aware"  # SINE-label has no eqs 6-8
    if options.assignment == "layernorm" or (eq6 and options.aggregation_attention == "shared_w3"):
        specs["w3"] = ((d, d), d, d)
    if options.interest_attention == "per_interest":
        specs["interest_w1"] = ((k, d, h), d, h)
        specs["interest_w2"] = ((k, h), h, 1)
    else:
        specs["interest_w1"] = ((d, h), d, h)
        specs["interest_w2"] = ((h, k), h, k)
    if eq6 and options.aggregation_attention == "shared_w3":
        specs["aggregation_w4"] = ((d,), d, 1)
    elif eq6:
        specs["aggregation_w"] = ((d, h), d, h)
        specs["aggregation_w4"] = ((h,), h, 1)
    if options.aggregation == "dense_concat":
        specs["query_kernel"] = ((2 * d, d), 2 * d, d)
    return specs


@functools.partial(jax.jit, static_argnums=1)
def _glorot_uniform(key: jax.Array, specs: tuple) -> dict[str, jax.Array]:
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) for each (name, (shape, fan_in, fan_out)).

    The item table gets its own draw of M + 1 rows (it can be large, and sharded) with row 0
    (padding) set to zero, then zero rows up to its padded size (the same values whatever
    the padding); every other parameter is a slice of one flat draw, so initialisation compiles two
    random-number programs rather than one per parameter shape (seconds each on a CPU).
    """
    table_key, key = jax.random.split(key)
    specs = dict(specs)
    (rows, d), fan_in, _ = specs.pop("item_embedding")
    values = {"item_embedding": init_item_table(table_key, fan_in - 1, rows, d)}
    if "input_embedding" in specs:  # its own draw; the other parameters' stay as without it
        specs.pop("input_embedding")
        values["input_embedding"] = init_item_table(
            jax.random.fold_in(table_key, 1), fan_in - 1, rows, d
        )
    sizes = [math.prod(shape) for shape, _, _ in specs.values()]
    flat = jax.random.uniform(key, (sum(sizes),), minval=-1.0, maxval=1.0)
    starts = itertools.accumulate(sizes, initial=0)
    for (name, (shape, fan_in, fan_out)), start, size in zip(specs.items(), starts, sizes):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        values[name] = limit * flat[start : start + size].reshape(shape)
    return values


class _SelfAttentionEncoder(nnx.Module):
    """`SineOptions.encoder_blocks`: SASRec's causal self-attention blocks over the history
    (`sasrec.sasrec_sequence`, one head): X'_t = Blocks(X sqrt(D) + P)_t, zero at padding.

    Parameters: position_embedding [n, D], the fields of `sasrec.BlockWeights` stacked over
    the blocks, final_norm_scale [D], final_norm_bias [D]; Glorot-uniform kernels, zero
    biases, unit LayerNorm gains (as `sasrec.SASRec`).
    """

    def __init__(self, num_blocks: int, n: int, d: int, key: jax.Array):
        keys = jax.random.split(key, 1 + len(sasrec.BlockWeights._fields))
        self.position_embedding = nnx.Param(jax.nn.initializers.glorot_uniform()(keys[0], (n, d)))
        stacked = jax.nn.initializers.glorot_uniform(in_axis=-2, out_axis=-1, batch_axis=0)
        for field, k in zip(sasrec.BlockWeights._fields, keys[1:]):
            if "kernel" in field:
                value = stacked(k, (num_blocks, d, d))
            elif field.endswith("norm_scale"):
                value = jnp.ones((num_blocks, d))
            else:
                value = jnp.zeros((num_blocks, d))
            setattr(self, field, nnx.Param(value))
        self.final_norm_scale = nnx.Param(jnp.ones((d,)))
        self.final_norm_bias = nnx.Param(jnp.zeros((d,)))

    def __call__(self, table: jax.Array, history: jax.Array, rate: float,
                 rng: jax.Array | None) -> jax.Array:
        """[B, n, D] contextualised history (dropout inside the blocks at training)."""
        mask = history > 0
        n = history.shape[1]
        rngs = (None, None) if rng is None else jax.random.split(rng)
        items = jnp.take(table, history, axis=0) * math.sqrt(table.shape[-1])
        x = dropout(items + self.position_embedding[...][-n:], rate, rngs[0])
        x = jnp.where(mask[..., None], x, 0.0)
        blocks = sasrec.BlockWeights(*(getattr(self, f)[...] for f in sasrec.BlockWeights._fields))
        out = sasrec.sasrec_sequence(
            x, mask, blocks, self.final_norm_scale[...], self.final_norm_bias[...], 1, rate,
            rngs[1],
        )
        return jnp.where(mask[..., None], out, 0.0)


class SINE(nnx.Module):
    """The SINE user encoder (eqs 1-8) with its item table and prototype pool.

    Parameters (present depending on `options`):
        item_embedding [R, D] (R >= M + 1; row 0 and rows past M are padding), input_embedding
        [R, D] (input_table "separate": the history's X_t), prototypes [L, D] (C),
        position_embedding [n, D] (row n-1 = most recent item), concept_w1 [D, H],
        concept_w2 [H] (eq 1), w3 [D, D] (eq 3 and/or eq 6 "shared_w3"), norm1, norm2
        (eq 3 "layernorm"), interest_w1 [K, D, H] | [D, H], interest_w2 [K, H] | [H, K] (eq 4),
        norm3 (eq 5), aggregation_w [D, H] (eq 6 "own*"), aggregation_w4 [H] (eq 6 W4),
        norm4 (eq 6), query_kernel [2D, D], query_bias [D] (eqs 7-8 "dense_concat").
    """

    def __init__(
        self,
        *,
        num_items: int,
        table_rows: int,
        embed_dim: int,
        num_interests: int,
        num_prototypes: int,
        max_seq_len: int,
        options: SineOptions,
        rngs: nnx.Rngs,
        item_categories: np.ndarray | None = None,
    ):
        d = embed_dim
        self.options = options
        self.num_interests = num_interests
        self.num_prototypes = num_prototypes
        if options.prototype_pool == "categories":  # [R], -1 past M and where unknown
            padded = np.full(table_rows, -1, np.int32)
            padded[: len(item_categories)] = item_categories
            self.item_category = Constant(jnp.asarray(padded))
        specs = _param_specs(
            num_items, table_rows, d, num_interests, num_prototypes, max_seq_len, options
        )
        values = _glorot_uniform(rngs.params(), tuple(specs.items()))

        def param(name: str) -> nnx.Param | None:
            return nnx.Param(values[name]) if name in values else None

        def layer_norm(present: bool) -> nnx.LayerNorm | None:
            return nnx.LayerNorm(d, rngs=rngs) if present else None

        self.item_embedding = param("item_embedding")
        self.input_embedding = param("input_embedding")
        self.prototypes = param("prototypes")
        self.position_embedding = param("position_embedding")
        self.concept_w1 = param("concept_w1")
        self.concept_w2 = param("concept_w2")
        self.w3 = param("w3")
        self.norm1 = layer_norm(options.assignment == "layernorm")
        self.norm2 = layer_norm(options.assignment == "layernorm")
        self.interest_w1 = param("interest_w1")
        self.interest_w2 = param("interest_w2")
        self.norm3 = layer_norm(options.interest_layernorm)
        self.aggregation_w = param("aggregation_w")
        self.aggregation_w4 = param("aggregation_w4")
        eq6 = options.aggregation != "label_aware"
        self.norm4 = nnx.LayerNorm(d, rngs=rngs) if eq6 else None
        self.query_kernel = param("query_kernel")
        dense = options.aggregation == "dense_concat"
        self.query_bias = nnx.Param(jnp.zeros((d,))) if dense else None
        self.output_w = nnx.Param(jnp.eye(d)) if options.output_projection else None
        self.encoder = (
            _SelfAttentionEncoder(options.encoder_blocks, max_seq_len, d, rngs.params())
            if options.encoder_blocks else None
        )

    def __call__(self, history: jax.Array, dropout_rng: jax.Array | None = None) -> UserEncoding:
        """Encodes histories.

        Args:
            history: [B, n] int32 item ids, 0 = padding, left-padded (most recent at n - 1).
            dropout_rng: at training, the key of the dropout on the history's embeddings X.

        Returns:
            UserEncoding.
        """
        opts = self.options
        mask = history > 0  # [B, n]
        inputs = self.input_embedding if opts.input_table == "separate" else self.item_embedding
        table = inputs[...]  # the X_t rows
        if self.encoder is None:
            x, project = embed_history(table, history, opts.dropout, dropout_rng)  # [B, n, D]
        else:
            x = self.encoder(table, history, opts.dropout, dropout_rng)  # [B, n, D]
            project = lambda w: jnp.tensordot(x, w, axes=1)  # noqa: E731
        pos = self.position_embedding[...]  # [n, D]
        concept_pos = pos if opts.positional_in_concept_attention else None
        scale = 1.0 / x.shape[-1] if opts.logit_scale == "cosine" else 1.0

        # Eqs 1-2: which K prototypes this user activates.
        w1 = self.concept_w1[...]
        z, a = self_attentive_pool(
            x, mask, w1, self.concept_w2[...], concept_pos, x_w1=project(w1)
        )
        if opts.prototype_pool == "categories":
            prototypes = category_prototypes(table, self.item_category[...], self.num_prototypes)
        else:
            prototypes = self.prototypes[...]
        c_u, prototype_ids, _ = concept_activation(z, prototypes, self.num_interests)

        # Eq 3.
        if opts.assignment == "layernorm":
            w3 = self.w3[...]
            p_kt = intention_assignment(
                x, c_u, w3, self.norm1, self.norm2, x_w3=project(w3), scale=scale
            )
        else:
            p_kt = cosine_assignment(x, c_u)

        # Eqs 4-5.
        w1, w2 = self.interest_w1[...], self.interest_w2[...]
        if opts.interest_attention == "per_interest":
            x_w1 = project(jnp.transpose(w1, (1, 0, 2)))  # [B, n, K, H]
            p_tk = interest_attention(x, mask, pos, w1, w2, x_w1=x_w1)
            phi = interest_embeddings(p_kt, p_tk, x, self.norm3)
        else:
            p_tk = gated_interest_attention(x, mask, pos, w1, w2, p_kt, x_w1=project(w1))
            phi = interest_embeddings(None, p_tk, x, self.norm3)

        if opts.aggregation == "label_aware":  # SINE-label: the K interests are the query
            return UserEncoding(None, phi, None, prototype_ids, p_kt, a)

        # Eq 6.
        if opts.aggregation_attention == "shared_w3":
            w_hidden = self.w3[...]
        else:
            w_hidden = self.aggregation_w[...]
        items = x if opts.aggregation_attention == "own_plus_items" else None
        _, c_apt = intention_sequence_and_apt(
            p_kt, c_u, mask, w_hidden, self.aggregation_w4[...], self.norm4, items, concept_pos
        )

        # Eqs 7-8.
        if opts.aggregation == "temperature":
            v, e = interest_aggregation(c_apt, phi, opts.temperature, scale)
        else:
            v, e = dense_concat_aggregation(
                c_apt, phi, self.query_kernel[...], self.query_bias[...]
            )
        if opts.output_projection:
            v = v @ self.output_w[...]  # [B, D]
        return UserEncoding(
            user_vector=v,
            interests=phi,
            interest_weights=e,
            prototype_ids=prototype_ids,
            assignment=p_kt,
            concept_attention=a,
        )

    def encode(self, history: jax.Array, dropout_rng: jax.Array | None = None) -> jax.Array:
        """The retrieval query (`sine_jax.models`): v [B, D], or phi [B, K, D] for SINE-label."""
        encoding = self(history, dropout_rng)
        return encoding.interests if encoding.user_vector is None else encoding.user_vector

    def summarize_interests(self, history: jax.Array) -> InterestSummary:
        """The interests of histories [B, n] (`InterestSummary`), at evaluation."""
        return summarize_interests(self(history), history > 0)

def build_model(
    model_config, num_items: int, rngs: nnx.Rngs, *, table_rows: int | None = None,
    item_categories: np.ndarray | None = None,
) -> SINE:
    """Validates `config.model` and builds SINE (or its ablation SINE-cate or SINE-label).

    Args:
        model_config: `config.model` with name ("sine", "sine_cate", "sine_label"), embed_dim,
            num_interests, num_prototypes, max_seq_len, temperature, preset and the switch
            fields.
        num_items: M, the number of real items (ids 1..M).
        rngs: parameter RNG streams.
        table_rows: rows of the item table, >= M + 1 (default M + 1); rows past M are
            padding (zero) so that the table splits evenly over devices.
        item_categories: int [M + 1] each item's category (-1 = none); SINE-cate's pool is
            one prototype per category (L = the largest category id + 1, replacing
            model.num_prototypes).

    Returns:
        The SINE module.

    Raises:
        ConfigError: a field is invalid (the message names it and the allowed values), or
            SINE-cate without item categories.
        ValueError: num_items < 1 (a data problem the caller should have reported).
    """
    name = model_config.get("name", "sine")
    if name not in SINE_NAMES:
        raise ConfigError(f"model.name={name!r} must be one of {SINE_NAMES}")
    for field in ("embed_dim", "num_interests", "num_prototypes", "max_seq_len"):
        require_int(field, model_config.get(field), 1)
    options = resolve_switches(model_config)
    k, num_prototypes = model_config.get("num_interests"), model_config.get("num_prototypes")
    if options.prototype_pool == "categories":
        if item_categories is None or np.max(item_categories, initial=-1) < 0:
            raise ConfigError(
                f"model.name={name!r} needs item categories and this dataset has none "
                "(MovieLens: movies.dat or u.item beside the ratings; csv: data.category_column)"
            )
        num_prototypes = int(np.max(item_categories)) + 1
    if k > num_prototypes:
        pool = (f"the {num_prototypes} item categories" if options.prototype_pool == "categories"
                else f"model.num_prototypes={num_prototypes}")
        raise ConfigError(f"model.num_interests={k} must be <= {pool}")
    if num_items < 1:
        raise ValueError(f"num_items={num_items} must be >= 1")
    table_rows = num_items + 1 if table_rows is None else table_rows
    if table_rows < num_items + 1:
        raise ValueError(f"table_rows={table_rows} must be >= num_items + 1 = {num_items + 1}")
    return SINE(
        num_items=num_items,
        table_rows=table_rows,
        embed_dim=model_config.get("embed_dim"),
        num_interests=k,
        num_prototypes=num_prototypes,
        max_seq_len=model_config.get("max_seq_len"),
        options=options,
        rngs=rngs,
        item_categories=item_categories,
    )
