"""Caser (Tang & Wang, WSDM 2018): convolutions over the history's embedding matrix.

Shape legend: B batch, n history length (the convolutions see the last L <= n), D embedding
dim, F_h horizontal filters per height, F_v vertical filters, M items. Histories are
left-padded with the padding id 0 (most recent item at n - 1); `mask` is `history > 0` [B, n].

The n x D matrix of the last n item embeddings is an image:
  * horizontal filters of every height h = 1..n (F_h each, h x D), ReLU, max-pooled over the
    n - h + 1 positions -> n F_h features;
  * vertical filters (F_v, n x 1): weighted sums of the rows, no activation -> F_v D features;
  * concat[vertical, horizontal] -> dense to D -> ReLU = the query.

Choices, as the authors' PyTorch code (`graytowne/caser_pytorch`, `caser.py`) unless said:
  * every convolution has a bias; the vertical features are flattened filter-major (F_v x D)
    and come first in the concatenation;
  * padded positions are zero rows of the image (the convolutions and the max-pool run over
    the whole zero-filled matrix; a window over padding sees zeros, never table row 0);
  * the paper's user embedding (concatenated to the dense output) and its separate output
    item embeddings W' [M, 2D] and item biases b' are left out: the encoder is user-id free,
    so held-out users can be scored, and the query is dotted with the shared item table;
  * the paper's Markov order L (`model.caser.markov_order`, 5 as the paper's MovieLens
    setting) takes the most recent L of the n history items: the image is L x D;
  * weights are Glorot-uniform (a conv kernel's fans are those of `jax.nn.initializers`:
    fan_in = receptive field, fan_out = filters x receptive field), biases zero, rather than
    PyTorch's default Kaiming-uniform.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from sine_jax.errors import ConfigError
from sine_jax.models.layers import dropout, dropout_rate, init_item_table, require_int

# model.dropout when None: the Caser paper's and the authors' code's rate.
DEFAULT_DROPOUT = 0.5

# ---------------------------------------------------------------------------------------------
# Pure functions.


def horizontal_offsets(n: int) -> list[int]:
    """Row offsets of the filters of height h = 1..n in the flat horizontal kernel: the
    filters of height h occupy rows [offsets[h - 1], offsets[h - 1] + h)."""
    return [h * (h - 1) // 2 for h in range(1, n + 1)]


def horizontal_conv_features(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """Horizontal convolutions of every height h = 1..n, ReLU, max-pool over positions.

    For height h and filter f: o_i = relu(sum_{j<h, d} x[i + j, d] W_h[j, d, f] + b_h[f]),
    i = 0..n-h; feature = max_i o_i.

    Args:
        x: [B, n, D] the image (zeros at padding).
        kernel: [n (n + 1) / 2, D, F_h] the filters of all heights stacked along the first
            axis (`horizontal_offsets`).
        bias: [n, F_h] per-height biases.

    Returns:
        [B, n F_h], height-major (features of height 1, then 2, ...).
    """
    n = x.shape[1]
    features = []
    for h, offset in zip(range(1, n + 1), horizontal_offsets(n)):
        conv = jax.lax.conv_general_dilated(
            x,
            kernel[offset : offset + h],
            window_strides=(1,),
            padding="VALID",
            dimension_numbers=("NWC", "WIO", "NWC"),
        )  # [B, n - h + 1, F_h]
        features.append(jnp.max(jax.nn.relu(conv + bias[h - 1]), axis=1))
    return jnp.concatenate(features, axis=-1)


def vertical_conv_features(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """Vertical convolution: each filter f is a weighted sum of the n rows, no activation.

    Args:
        x: [B, n, D] the image.
        kernel: [n, F_v] one weight per position and filter.
        bias: [F_v].

    Returns:
        [B, F_v D], filter-major (as PyTorch's `view` of the [B, F_v, 1, D] conv output).
    """
    out = jnp.einsum("bnd,nf->bfd", x, kernel) + bias[:, None]  # [B, F_v, D]
    return out.reshape(x.shape[0], -1)


def caser_query(
    x: jax.Array,
    horizontal_kernel: jax.Array,
    horizontal_bias: jax.Array,
    vertical_kernel: jax.Array,
    vertical_bias: jax.Array,
    dense_kernel: jax.Array,
    dense_bias: jax.Array,
    rate: float = 0.0,
    rng: jax.Array | None = None,
) -> jax.Array:
    """relu(dropout(concat[vertical, horizontal]) W + b).

    Args:
        x: [B, n, D] the image (zeros at padding).
        horizontal_kernel, horizontal_bias: see `horizontal_conv_features`.
        vertical_kernel, vertical_bias: see `vertical_conv_features`.
        dense_kernel: [F_v D + n F_h, D].
        dense_bias: [D].
        rate: dropout rate of the concatenated features, at training (with `rng`).
        rng: the dropout key; None at evaluation.

    Returns:
        [B, D] the query.
    """
    features = jnp.concatenate(
        [
            vertical_conv_features(x, vertical_kernel, vertical_bias),
            horizontal_conv_features(x, horizontal_kernel, horizontal_bias),
        ],
        axis=-1,
    )
    features = dropout(features, rate, rng)
    return jax.nn.relu(features @ dense_kernel + dense_bias)


# ---------------------------------------------------------------------------------------------
# Module.


def _horizontal_kernel(key: jax.Array, n: int, d: int, filters: int) -> jax.Array:
    """Glorot-uniform filters of every height, one random draw: height h (a [h, D, 1, F_h]
    conv kernel) has limit sqrt(6 / (h D + h D F_h))."""
    limits = [math.sqrt(6.0 / (h * d * (1 + filters))) for h in range(1, n + 1) for _ in range(h)]
    u = jax.random.uniform(key, (n * (n + 1) // 2, d, filters), minval=-1.0, maxval=1.0)
    return u * jnp.asarray(limits)[:, None, None]


class Caser(nnx.Module):
    """Caser user encoder (horizontal + vertical convolutions, dense + ReLU), user-id free.

    Parameters: item_embedding [R, D] (row 0 and rows past M are padding), horizontal_kernel
    [L (L + 1) / 2, D, F_h] (heights 1..L stacked), horizontal_bias [L, F_h], vertical_kernel
    [L, F_v], vertical_bias [F_v], dense_kernel [F_v D + L F_h, D], dense_bias [D]; L =
    `model.caser.markov_order` (the pure functions call the image's rows n).
    At training the concatenated features are dropped out (the authors' code, rate 0.5).
    """

    def __init__(self, *, num_items: int, table_rows: int, model_config, rngs: nnx.Rngs):
        d, max_seq_len = model_config.embed_dim, model_config.max_seq_len
        require_int("embed_dim", d, 1)
        require_int("max_seq_len", max_seq_len, 1)
        f_h, f_v = model_config.caser.num_horizontal, model_config.caser.num_vertical
        require_int("caser.num_horizontal", f_h, 1)
        require_int("caser.num_vertical", f_v, 1)
        n = model_config.caser.markov_order
        require_int("caser.markov_order", n, 1)
        if n > max_seq_len:
            raise ConfigError(
                f"model.caser.markov_order={n} must be <= model.max_seq_len={max_seq_len}"
            )
        self.markov_order = n
        self.dropout = dropout_rate(model_config, DEFAULT_DROPOUT)
        self.item_embedding = nnx.Param(init_item_table(rngs.params(), num_items, table_rows, d))
        self.horizontal_kernel = nnx.Param(_horizontal_kernel(rngs.params(), n, d, f_h))
        self.horizontal_bias = nnx.Param(jnp.zeros((n, f_h)))
        # A [n, 1, 1, F_v] conv kernel: fan_in n, fan_out n F_v.
        limit = math.sqrt(6.0 / (n * (1 + f_v)))
        self.vertical_kernel = nnx.Param(
            jax.random.uniform(rngs.params(), (n, f_v), minval=-limit, maxval=limit)
        )
        self.vertical_bias = nnx.Param(jnp.zeros((f_v,)))
        glorot = jax.nn.initializers.glorot_uniform()
        self.dense_kernel = nnx.Param(glorot(rngs.params(), (f_v * d + n * f_h, d)))
        self.dense_bias = nnx.Param(jnp.zeros((d,)))

    def encode(self, history: jax.Array, dropout_rng: jax.Array | None = None) -> jax.Array:
        """Encodes histories.

        Args:
            history: [B, n] int32 item ids, 0 = padding, left-padded (most recent at n - 1).
            dropout_rng: at training, the key of the dropout on the convolution features.

        Returns:
            [B, D] the query (non-negative: the dense layer ends in a ReLU, as the paper).
        """
        history = history[:, -self.markov_order :]  # the most recent L items
        mask = history > 0
        table = self.item_embedding[...]
        x = jnp.where(mask[..., None], jnp.take(table, history, axis=0), 0.0)  # [B, n, D]
        return caser_query(
            x,
            self.horizontal_kernel[...],
            self.horizontal_bias[...],
            self.vertical_kernel[...],
            self.vertical_bias[...],
            self.dense_kernel[...],
            self.dense_bias[...],
            self.dropout,
            dropout_rng,
        )
