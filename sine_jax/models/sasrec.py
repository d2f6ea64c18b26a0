"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention blocks over the history; the query
is the output at the most recent position.

Shape legend: B batch, n history length, D embedding dim, L blocks, h heads (D / h per head),
M items. Histories are left-padded with the padding id 0 (most recent item at n - 1);
`mask` is `history > 0` [B, n].

Choices, as the authors' TensorFlow code (`kang205/SASRec`, `model.py` and `modules.py`):
  * input: table[history] * sqrt(D) + learned positional embeddings [n, D] (position n - 1 =
    most recent), zeroed at padding;
  * a block: s = LN(x); a = MultiHead(queries=s, keys=values=x) + s (the residual adds the
    normalised queries, as `outputs += queries` there); s2 = LN(a);
    x = FFN(s2) + s2, zeroed at padding. Q and V are dense layers with biases, K one without
    (the code's K bias adds q . b_k to every logit of a query, which the softmax removes: it
    changes no output, its gradient is zero and Adam would move it by rounding noise); the heads
    are contiguous D / h slices (`tf.split`), logits are divided by sqrt(D / h), and there is
    no output projection; attention is causal (position i sees j <= i) and padded keys are
    masked (`masked_softmax`: a padded query, which with left padding sees only padding, gets
    zero weights, the code's query masking);
  * FFN: two D x D point-wise layers (kernel-size-1 convolutions there) with biases, ReLU
    between;
  * a final LayerNorm; LayerNorm epsilon 1e-8 (the code's `normalize`), gains 1, biases 0;
  * weights Glorot-uniform (the code's `xavier_initializer` for the embeddings, and the
    default of `tf.layers.dense`), biases zero;
  * dropout at training where the code has it: on the embedded input, on the attention
    weights and after each of the FFN's two layers, one rate (the paper's 0.2 for
    MovieLens-1M is the default; it uses 0.5 for its sparser datasets).
The loss (the code's binary cross-entropy with one negative per position, on every position)
is replaced by the framework's loss on the last position.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from sine_jax.errors import ConfigError
from sine_jax.models.layers import (
    dropout,
    dropout_rate,
    init_item_table,
    masked_softmax,
    require_int,
)

# LayerNorm epsilon of the authors' `normalize`.
LAYER_NORM_EPS = 1e-8
# model.dropout when None: the SASRec paper's rate for MovieLens-1M.
DEFAULT_DROPOUT = 0.2


# ---------------------------------------------------------------------------------------------
# Pure functions.


def layer_norm(
    x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float = LAYER_NORM_EPS
) -> jax.Array:
    """(x - mean) / sqrt(var + eps) * scale + bias over the last axis (finite for x = 0).

    Args:
        x: [..., D]; scale, bias: [D].
    """
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


class BlockWeights(NamedTuple):
    """One block's parameters (or all blocks', stacked on a leading [L] axis).

    Attributes:
        q_kernel, k_kernel, v_kernel: [D, D] attention projections; q_bias, v_bias: [D] (no
            key bias: it would shift all of a query's logits alike, which the softmax removes).
        attention_norm_scale, attention_norm_bias: [D] LayerNorm of the attention queries.
        ffn_norm_scale, ffn_norm_bias: [D] LayerNorm of the feed-forward input.
        ffn_kernel1, ffn_kernel2: [D, D]; ffn_bias1, ffn_bias2: [D].
    """

    q_kernel: jax.Array
    q_bias: jax.Array
    k_kernel: jax.Array
    v_kernel: jax.Array
    v_bias: jax.Array
    attention_norm_scale: jax.Array
    attention_norm_bias: jax.Array
    ffn_norm_scale: jax.Array
    ffn_norm_bias: jax.Array
    ffn_kernel1: jax.Array
    ffn_bias1: jax.Array
    ffn_kernel2: jax.Array
    ffn_bias2: jax.Array


def causal_self_attention(
    queries: jax.Array,
    keys: jax.Array,
    mask: jax.Array,
    weights: BlockWeights,
    num_heads: int,
    rate: float = 0.0,
    rng: jax.Array | None = None,
) -> jax.Array:
    """Multi-head attention, position i attending to the valid positions j <= i.

    a_h = masked softmax_j(Q_h K_h^T / sqrt(D / h)); out = concat_h(a_h V_h), Q = queries W_q
    + b_q, K = keys W_k, V = keys W_v + b_v; no output projection, no residual.

    Args:
        queries: [B, n, D] (LayerNorm'd in SASRec).
        keys: [B, n, D] keys and values.
        mask: [B, n] boolean, True at real items (the keys that may be attended to).
        weights: the block's q/k/v kernels and biases.
        num_heads: h, dividing D.
        rate: dropout rate of the attention weights, at training (with `rng`).
        rng: the dropout key; None at evaluation.

    Returns:
        [B, n, D]; zeros at a position with no valid key at or before it.
    """
    b, n, d = queries.shape
    head_dim = d // num_heads

    def heads(y, kernel, bias=0.0):  # [B, n, D] -> [B, n, h, D / h]
        return (y @ kernel + bias).reshape(b, n, num_heads, head_dim)

    q = heads(queries, weights.q_kernel, weights.q_bias)
    k = heads(keys, weights.k_kernel)
    v = heads(keys, weights.v_kernel, weights.v_bias)
    logits = jnp.einsum("bihc,bjhc->bhij", q, k) / math.sqrt(head_dim)
    causal = jnp.tril(jnp.ones((n, n), dtype=bool))  # [i, j]: j <= i
    allowed = causal[None, None] & mask[:, None, None, :]  # [B, 1, n, n]
    attention = dropout(masked_softmax(logits, allowed, axis=-1), rate, rng)  # [B, h, n, n]
    return jnp.einsum("bhij,bjhc->bihc", attention, v).reshape(b, n, d)


def point_wise_feed_forward(
    x: jax.Array, weights: BlockWeights, rate: float = 0.0, rng: jax.Array | None = None
) -> jax.Array:
    """dropout(dropout(relu(x W1 + b1)) W2 + b2), per position, no residual (dropout only
    at training, with `rng`). x: [..., D] -> [..., D]."""
    rngs = (None, None) if rng is None else jax.random.split(rng)
    hidden = dropout(jax.nn.relu(x @ weights.ffn_kernel1 + weights.ffn_bias1), rate, rngs[0])
    return dropout(hidden @ weights.ffn_kernel2 + weights.ffn_bias2, rate, rngs[1])


def sasrec_block(
    x: jax.Array, mask: jax.Array, weights: BlockWeights, num_heads: int,
    rate: float = 0.0, rng: jax.Array | None = None,
) -> jax.Array:
    """One SASRec block (the authors' code):

        s  = LN_a(x);  a = CausalAttention(queries=s, keys=values=x) + s
        s2 = LN_f(a);  out = (FFN(s2) + s2) * mask

    Args:
        x: [B, n, D] inputs (zeros at padding).
        mask: [B, n] boolean, True at real items.
        weights: this block's parameters.
        num_heads: h.
        rate: dropout rate (attention weights, FFN), at training (with `rng`).
        rng: the dropout key; None at evaluation.

    Returns:
        [B, n, D], zeros at padding; position i depends on positions <= i only.
    """
    rngs = (None, None) if rng is None else jax.random.split(rng)
    s = layer_norm(x, weights.attention_norm_scale, weights.attention_norm_bias)
    a = causal_self_attention(s, x, mask, weights, num_heads, rate, rngs[0]) + s
    s2 = layer_norm(a, weights.ffn_norm_scale, weights.ffn_norm_bias)
    out = point_wise_feed_forward(s2, weights, rate, rngs[1]) + s2
    return jnp.where(mask[..., None], out, 0.0)


def sasrec_sequence(
    x: jax.Array,
    mask: jax.Array,
    blocks: BlockWeights,
    final_norm_scale: jax.Array,
    final_norm_bias: jax.Array,
    num_heads: int,
    rate: float = 0.0,
    rng: jax.Array | None = None,
) -> jax.Array:
    """The L blocks (a jax.lax.scan over the stacked weights), then the final LayerNorm.

    Args:
        x: [B, n, D] embedded inputs (scaled items + positions, zeros at padding).
        mask: [B, n] boolean.
        blocks: BlockWeights with every field stacked on a leading [L] axis.
        final_norm_scale, final_norm_bias: [D].
        num_heads: h.
        rate: dropout rate inside the blocks, at training (with `rng`).
        rng: the dropout key (one per block is derived from it); None at evaluation.

    Returns:
        [B, n, D] one output per position (the LayerNorm bias at padded positions).
    """
    if rng is None:
        def block(x, weights):  # one compiled body whatever L
            return sasrec_block(x, mask, weights, num_heads), None

        x, _ = jax.lax.scan(block, x, blocks)
    else:
        def dropped_block(x, weights_and_key):
            weights, key = weights_and_key
            return sasrec_block(x, mask, weights, num_heads, rate, key), None

        keys = jax.random.split(rng, blocks.q_kernel.shape[0])  # [L]
        x, _ = jax.lax.scan(dropped_block, x, (blocks, keys))
    return layer_norm(x, final_norm_scale, final_norm_bias)


# ---------------------------------------------------------------------------------------------
# Module.


_KERNELS = ("q_kernel", "k_kernel", "v_kernel", "ffn_kernel1", "ffn_kernel2")


class SASRec(nnx.Module):
    """SASRec user encoder: causal self-attention blocks; the query is the output at n - 1.

    Parameters: item_embedding [R, D] (row 0 and rows past M are padding),
    position_embedding [n, D] (row n - 1 = most recent), the fields of `BlockWeights` each
    stacked over the L blocks ([L, D, D] kernels, [L, D] biases and LayerNorm gains/biases),
    final_norm_scale [D], final_norm_bias [D].
    """

    def __init__(self, *, num_items: int, table_rows: int, model_config, rngs: nnx.Rngs):
        d, n = model_config.embed_dim, model_config.max_seq_len
        require_int("embed_dim", d, 1)
        require_int("max_seq_len", n, 1)
        num_blocks, num_heads = model_config.sasrec.num_blocks, model_config.sasrec.num_heads
        require_int("sasrec.num_blocks", num_blocks, 1)
        require_int("sasrec.num_heads", num_heads, 1)
        if d % num_heads:
            raise ConfigError(
                f"model.sasrec.num_heads={num_heads} must divide model.embed_dim={d}"
            )
        self.num_heads = num_heads
        self.dropout = dropout_rate(model_config, DEFAULT_DROPOUT)
        self.item_embedding = nnx.Param(init_item_table(rngs.params(), num_items, table_rows, d))
        glorot = jax.nn.initializers.glorot_uniform()
        self.position_embedding = nnx.Param(glorot(rngs.params(), (n, d)))
        stacked = jax.nn.initializers.glorot_uniform(in_axis=-2, out_axis=-1, batch_axis=0)
        for name in BlockWeights._fields:
            if name in _KERNELS:
                value = stacked(rngs.params(), (num_blocks, d, d))
            elif name.endswith("norm_scale"):
                value = jnp.ones((num_blocks, d))
            else:
                value = jnp.zeros((num_blocks, d))
            setattr(self, name, nnx.Param(value))
        self.final_norm_scale = nnx.Param(jnp.ones((d,)))
        self.final_norm_bias = nnx.Param(jnp.zeros((d,)))

    def encode(self, history: jax.Array, dropout_rng: jax.Array | None = None) -> jax.Array:
        """Encodes histories.

        Args:
            history: [B, n] int32 item ids, 0 = padding, left-padded (most recent at n - 1).
            dropout_rng: at training, the key of every dropout (input, attention, FFN).

        Returns:
            [B, D] the output at position n - 1 (the final LayerNorm's bias for a history of
            padding only).
        """
        mask = history > 0
        table = self.item_embedding[...]
        rngs = (None, None) if dropout_rng is None else jax.random.split(dropout_rng)
        items = jnp.take(table, history, axis=0) * math.sqrt(table.shape[-1])
        x = dropout(items + self.position_embedding[...], self.dropout, rngs[0])
        x = jnp.where(mask[..., None], x, 0.0)  # [B, n, D]
        blocks = BlockWeights(*(getattr(self, name)[...] for name in BlockWeights._fields))
        out = sasrec_sequence(
            x, mask, blocks, self.final_norm_scale[...], self.final_norm_bias[...], self.num_heads,
            self.dropout, rngs[1],
        )
        return out[:, -1]
