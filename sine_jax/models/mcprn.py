"""MCPRN: Mixture-Channel Purpose Routing Network (Wang et al., IJCAI 2019), as a user encoder
whose query scores items through their own purpose weights.

Shape legend: B batch, n history length, K purposes (channels, `model.num_interests`),
D embedding dim. Histories are left-padded with the padding id 0 (most recent item at n - 1).

Purpose router (PRN): each item v is routed to the K purposes by
  c_vk = softmax_k(e_v . p_k / tau)               P [K, D] purpose embeddings,
                                                   tau = `model.mcprn.temperature`
for the history's items (a_tk = c_{x_t}k, 0 at padded positions) and for the candidates.

Purpose-specific recurrent units (PSRU), one channel per purpose with its own weights
(stacked [K, ...]), hidden size D, h^k_0 = 0, a GRU (Cho et al. form, reset gate applied
before the recurrent product) whose update is gated by the routing weight (the paper's
concentration gate):
  r = sigmoid(x_t Wx_r^k + h Wh_r^k + b_r^k)
  z = sigmoid(x_t Wx_z^k + h Wh_z^k + b_z^k)
  c = tanh(x_t Wx_c^k + (r * h) Wh_c^k + b_c^k)
  GRU_k(h, x_t) = (1 - z) * h + z * c
  h^k_t = (1 - a_tk) * h^k_{t-1} + a_tk * GRU_k(h^k_{t-1}, x_t)
(a GRU whose update gate is a_tk * z). All channels run together in one `lax.scan` over
positions; a padded step has a_tk = 0 and leaves every channel exactly unchanged, so left
padding never changes the output.

Multi-purpose session representation and score: the channels' final states are mixed by the
candidate item's own purpose weights, s_v = sum_k c_vk h^k_n, and the item scores
s_v . e_v = sum_k h^k_n . (c_vk e_v). That is an inner product in K D dimensions between the
query [h^1_n, ..., h^K_n] (`encode`) and the item vector [c_v1 e_v, ..., c_vK e_v]
(`item_vectors`), so training (sampled or full softmax) and full-ranking evaluation score
every item exactly as the paper's mixture does. This is the paper's mixture as the public
re-implementations read it (e.g. github.com/tingyunw/MCPRN: `compute_scores`); mixing with one
weight vector per user instead (the session's mean routing weights) scores every candidate
against the same blend of all purposes: 0.670 test HR@10 on the synthetic data against
0.777 (docs/baselines.md).

Choices where the paper leaves a detail open: one shared item table for the inputs and the
candidates (as every model here); the framework's loss (sampled softmax) instead of the
paper's; no threshold on small routing weights (some re-implementations zero a_tk < 0.01).

Initialization: item table by `layers.init_item_table`; P and each channel's input and
recurrent kernels [D, 3D] Glorot-uniform; biases zero.
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from sine_jax.errors import ConfigError
from sine_jax.models.layers import dropout_rate, embed_history, init_item_table, require_int

# model.dropout when None: the paper names no dropout; the rate drops out the history's item
# embeddings at training.
DEFAULT_DROPOUT = 0.0

# ---------------------------------------------------------------------------------------------
# Pure functions.


def purpose_routing(
    x: jax.Array, mask: jax.Array, purposes: jax.Array, temperature: float
) -> jax.Array:
    """a_tk = softmax_k(x_t . p_k / tau) at real positions, 0 at padding.

    Args:
        x: [B, n, D] item embeddings.
        mask: [B, n] boolean, True at real items.
        purposes: [K, D] purpose embeddings P.
        temperature: tau > 0.

    Returns:
        a: [B, n, K].
    """
    a = jax.nn.softmax(jnp.einsum("bnd,kd->bnk", x, purposes) / temperature, axis=-1)
    return jnp.where(mask[..., None], a, 0.0)


def psru_step(
    h: jax.Array, x_in: jax.Array, a: jax.Array, w_hidden: jax.Array, bias: jax.Array
) -> jax.Array:
    """One step of the K purpose-specific recurrent units.

    Args:
        h: [B, K, D] previous states h^k_{t-1}.
        x_in: [B, K, 3D] x_t Wx^k (gates r, z, c along the last axis).
        a: [B, K] routing weights a_tk (0 at a padded step).
        w_hidden: [K, D, 3D] recurrent kernels Wh^k (gates r, z, c).
        bias: [K, 3D] biases b^k.

    Returns:
        [B, K, D] states h^k_t = (1 - a) h + a GRU_k(h, x_t).
    """
    d = h.shape[-1]
    gates_in = x_in + bias  # [B, K, 3D]
    gates_h = jnp.einsum("bkd,kde->bke", h, w_hidden[..., : 2 * d])  # [B, K, 2D]
    r = jax.nn.sigmoid(gates_in[..., :d] + gates_h[..., :d])
    z = jax.nn.sigmoid(gates_in[..., d : 2 * d] + gates_h[..., d:])
    c = jnp.tanh(gates_in[..., 2 * d :] + jnp.einsum("bkd,kde->bke", r * h, w_hidden[..., 2 * d :]))
    gru = (1.0 - z) * h + z * c
    a = a[..., None]
    return (1.0 - a) * h + a * gru


def psru_channels(x_in: jax.Array, a: jax.Array, w_hidden: jax.Array, bias: jax.Array) -> jax.Array:
    """Runs the K channels over the sequence from h^k_0 = 0 (one `lax.scan` over positions).

    Args:
        x_in: [B, n, K, 3D] x_t Wx^k for every position (zero at padding).
        a: [B, n, K] routing weights (zero at padding).
        w_hidden: [K, D, 3D]; bias: [K, 3D].

    Returns:
        [B, K, D] the final states h^k_n.
    """
    b, _, k, three_d = x_in.shape
    h0 = jnp.zeros((b, k, three_d // 3), x_in.dtype)

    def step(h, inputs):
        x_t, a_t = inputs
        return psru_step(h, x_t, a_t, w_hidden, bias), None

    h, _ = jax.lax.scan(step, h0, (jnp.swapaxes(x_in, 0, 1), jnp.swapaxes(a, 0, 1)))
    return h


def candidate_vectors(rows: jax.Array, purposes: jax.Array, temperature: float) -> jax.Array:
    """The item side of the mixture: [c_1 e, ..., c_K e] with c = softmax_k(e . p_k / tau).

    Args:
        rows: [..., D] item embeddings e (a zero row, the padding, gives zeros).
        purposes: [K, D] purpose embeddings P.
        temperature: tau > 0.

    Returns:
        [..., K * D], block k = c_k e.
    """
    c = jax.nn.softmax(rows @ purposes.T / temperature, axis=-1)  # [..., K]
    return (c[..., :, None] * rows[..., None, :]).reshape(*rows.shape[:-1], -1)


# ---------------------------------------------------------------------------------------------
# Module.


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _init_values(
    key: jax.Array, num_items: int, table_rows: int, d: int, k: int
) -> dict[str, jax.Array]:
    """All of MCPRN's starting arrays in one compiled program (eager random ops compile one
    program per shape, about half a second each on a CPU)."""
    keys = jax.random.split(key, 4)
    glorot = jax.nn.initializers.glorot_uniform()
    stacked = jax.nn.initializers.glorot_uniform(batch_axis=(0,))  # K matrices [D, 3D]
    return {
        "item_embedding": init_item_table(keys[0], num_items, table_rows, d),
        "purposes": glorot(keys[1], (k, d)),
        "psru_w_input": stacked(keys[2], (k, d, 3 * d)),
        "psru_w_hidden": stacked(keys[3], (k, d, 3 * d)),
        "psru_bias": jnp.zeros((k, 3 * d)),
    }

class MCPRN(nnx.Module):
    """MCPRN user encoder: one query [K D] per user against the items' `item_vectors`.

    Parameters: item_embedding [R, D], purposes [K, D], psru_w_input [K, D, 3D],
    psru_w_hidden [K, D, 3D], psru_bias [K, 3D].
    """

    def __init__(self, *, num_items: int, table_rows: int, model_config, rngs: nnx.Rngs):
        d = require_int("embed_dim", model_config.get("embed_dim"), 1)
        k = require_int("num_interests", model_config.get("num_interests"), 1)
        mcprn = model_config.get("mcprn") or {}
        tau = mcprn.get("temperature")
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0:
            raise ConfigError(f"model.mcprn.temperature={tau!r} must be a number > 0")
        self.temperature = float(tau)
        values = _init_values(rngs.params(), num_items, table_rows, d, k)
        self.dropout = dropout_rate(model_config, DEFAULT_DROPOUT)
        self.item_embedding = nnx.Param(values["item_embedding"])
        self.purposes = nnx.Param(values["purposes"])
        self.psru_w_input = nnx.Param(values["psru_w_input"])
        self.psru_w_hidden = nnx.Param(values["psru_w_hidden"])
        self.psru_bias = nnx.Param(values["psru_bias"])

    def encode(self, history: jax.Array, dropout_rng: jax.Array | None = None) -> jax.Array:
        """The query of each user: its channels' final states side by side.

        Args:
            history: int32 [B, n] item ids, 0 = padding, left-padded.
            dropout_rng: at training, the key of the dropout on the history's embeddings.

        Returns:
            [B, K * D] = [h^1_n, ..., h^K_n] (zeros for an all-padding history); it scores
            the `item_vectors` of the items.
        """
        mask = history > 0
        x, project = embed_history(self.item_embedding[...], history, self.dropout, dropout_rng)
        a = purpose_routing(x, mask, self.purposes[...], self.temperature)
        w_input = jnp.transpose(self.psru_w_input[...], (1, 0, 2))  # [D, K, 3D]
        x_in = project(w_input)  # [B, n, K, 3D]
        h = psru_channels(x_in, a, self.psru_w_hidden[...], self.psru_bias[...])  # [B, K, D]
        return h.reshape(h.shape[0], -1)

    def item_vectors(self, rows: jax.Array) -> jax.Array:
        """What the queries score: `candidate_vectors` of item rows [..., D] -> [..., K * D]."""
        return candidate_vectors(rows, self.purposes[...], self.temperature)
