"""GRU4Rec (Hidasi et al., ICLR 2016): one GRU layer over the history; the query is its last
hidden state.

Shape legend: B batch, n history length, D embedding dim (also the GRU's hidden size H),
M items. Histories are left-padded with the padding id 0 (most recent item at n - 1);
`mask` is `history > 0` [B, n].

Choices (the paper's session-parallel mini-batches, one-hot inputs and TOP1/BPR losses are
replaced by the framework's shared item table, loss and full-ranking evaluation, as in the
SINE/ComiRec comparisons and RecBole's GRU4Rec):
  * the GRU input is the item embedding (the table shared with the output side) and the query
    is the last hidden state itself (hidden size D, so no output projection);
  * the cell follows the PyTorch `torch.nn.GRU` equations (Keras' `reset_after=True`), with
    separate input and recurrent biases, see `gru_cell`;
  * padded steps leave the state unchanged, so with left padding the state is zero until the
    first real item;
  * input and recurrent kernels are Glorot-uniform per gate ([D, H] and [H, H] matrices, as
    RecBole's `xavier_uniform_` on the GRU weights), biases zero;
  * dropout at training on the last hidden state (the authors' `dropout_p_hidden`; their
    cross-entropy parameter sample for RecSys Challenge 2015 uses 0.3, the default here).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from sine_jax.models.layers import dropout, dropout_rate, init_item_table, require_int

# Gate order of the stacked weights: reset, update, candidate.
NUM_GATES = 3
# model.dropout when None: the hidden-state dropout of the authors' cross-entropy setting.
DEFAULT_DROPOUT = 0.3


# ---------------------------------------------------------------------------------------------
# Pure functions.


def gru_cell(h: jax.Array, gx: jax.Array, w_h: jax.Array, b_h: jax.Array) -> jax.Array:
    """One GRU step, the PyTorch `torch.nn.GRU` equations:

        r  = sigmoid(x W_xr + b_xr + h W_hr + b_hr)
        z  = sigmoid(x W_xz + b_xz + h W_hz + b_hz)
        c  = tanh(x W_xc + b_xc + r * (h W_hc + b_hc))
        h' = (1 - z) * c + z * h

    Args:
        h: [B, H] previous state.
        gx: [B, 3, H] x W_x + b_x for the gates (r, z, c), computed for every step at once.
        w_h: [3, H, H] recurrent kernels (r, z, c).
        b_h: [3, H] recurrent biases.

    Returns:
        h': [B, H].
    """
    gh = jnp.einsum("bh,ghk->bgk", h, w_h) + b_h  # [B, 3, H]
    r = jax.nn.sigmoid(gx[:, 0] + gh[:, 0])
    z = jax.nn.sigmoid(gx[:, 1] + gh[:, 1])
    c = jnp.tanh(gx[:, 2] + r * gh[:, 2])
    return (1.0 - z) * c + z * h


def gru_last_state(
    x: jax.Array,
    mask: jax.Array,
    w_x: jax.Array,
    b_x: jax.Array,
    w_h: jax.Array,
    b_h: jax.Array,
) -> jax.Array:
    """Runs `gru_cell` over the positions (jax.lax.scan) from a zero state; a masked step keeps
    the previous state: h_t = where(mask_t, cell(h_{t-1}, x_t), h_{t-1}).

    Args:
        x: [B, n, D] inputs.
        mask: [B, n] boolean, True at real items.
        w_x: [3, D, H] input kernels (r, z, c).
        b_x: [3, H] input biases.
        w_h: [3, H, H] recurrent kernels.
        b_h: [3, H] recurrent biases.

    Returns:
        [B, H] the state after the last position.
    """
    gx = jnp.einsum("bnd,gdh->nbgh", x, w_x) + b_x  # [n, B, 3, H], time-major for the scan
    h0 = jnp.zeros((x.shape[0], w_h.shape[-1]), gx.dtype)

    def step(h, inputs):
        gx_t, mask_t = inputs
        return jnp.where(mask_t[:, None], gru_cell(h, gx_t, w_h, b_h), h), None

    h, _ = jax.lax.scan(step, h0, (gx, mask.T))
    return h


# ---------------------------------------------------------------------------------------------
# Module.

class GRU4Rec(nnx.Module):
    """GRU4Rec user encoder: the last state of a GRU (hidden size D) over the history.

    Parameters: item_embedding [R, D] (row 0 and rows past M are padding), input_kernel
    [3, D, D], input_bias [3, D], recurrent_kernel [3, D, D], recurrent_bias [3, D] (gates
    reset, update, candidate).
    """

    def __init__(self, *, num_items: int, table_rows: int, model_config, rngs: nnx.Rngs):
        d = model_config.embed_dim
        require_int("embed_dim", d, 1)
        require_int("max_seq_len", model_config.max_seq_len, 1)
        self.dropout = dropout_rate(model_config, DEFAULT_DROPOUT)
        self.item_embedding = nnx.Param(init_item_table(rngs.params(), num_items, table_rows, d))
        glorot = jax.nn.initializers.glorot_uniform(in_axis=-2, out_axis=-1, batch_axis=0)
        self.input_kernel = nnx.Param(glorot(rngs.params(), (NUM_GATES, d, d)))
        self.input_bias = nnx.Param(jnp.zeros((NUM_GATES, d)))
        self.recurrent_kernel = nnx.Param(glorot(rngs.params(), (NUM_GATES, d, d)))
        self.recurrent_bias = nnx.Param(jnp.zeros((NUM_GATES, d)))

    def encode(self, history: jax.Array, dropout_rng: jax.Array | None = None) -> jax.Array:
        """Encodes histories.

        Args:
            history: [B, n] int32 item ids, 0 = padding, left-padded (most recent at n - 1).
            dropout_rng: at training, the key of the dropout on the last state.

        Returns:
            [B, D] the last GRU state (zeros for a history of padding only).
        """
        mask = history > 0
        table = self.item_embedding[...]
        x = jnp.where(mask[..., None], jnp.take(table, history, axis=0), 0.0)  # [B, n, D]
        h = gru_last_state(
            x,
            mask,
            self.input_kernel[...],
            self.input_bias[...],
            self.recurrent_kernel[...],
            self.recurrent_bias[...],
        )
        return dropout(h, self.dropout, dropout_rng)
