"""MIND: Multi-Interest Network with Dynamic routing (Li et al., CIKM 2019), as a K-interest
user encoder in the form of ComiRec's public re-implementation (THUDM/ComiRec,
`src/model.py`, `CapsuleNetwork` with `bilinear_type=0`, used by `Model_MIND`).

Shape legend: B batch, n history length, K interests, D embedding dim. Histories are
left-padded with the padding id 0 (most recent item at n - 1); `mask` is `history > 0`.

Behaviour-to-interest (B2I) dynamic routing:
  u_hat_t = x_t S                         (one bilinear map S [D, D] shared by all k)
  b_kt    = b0_kt                         (fixed routing-logit start, see below)
  for r = 1..R:
      w_kt = softmax_k(b_kt), 0 at padded t
      z_k  = sum_t w_kt u_hat_t
      v_k  = squash(z_k) = |z|^2 / (1 + |z|^2) * z / sqrt(|z|^2 + 1e-9)
      if r < R: b_kt += v_k . u_hat_t
then each interest goes through ComiRec's `proj` layer, relu(v_k W + c), the "ReLU layers"
of the MIND paper (which there also read a user-profile embedding; we have none).

Choices where the paper leaves a detail open (ComiRec's code unless said otherwise):
* One shared S without bias (the MIND paper's shared bilinear map; ComiRec's dense layer
  also has a bias, which would make padded u_hat nonzero; its routing weight there is 0).
* u_hat is under stop_gradient in every iteration before the last (ComiRec's `stop_grad`),
  so the routing weights are constants for the gradient and only the last z_k = sum w u_hat
  carries gradients into S and the item table.
* b0 is drawn once at construction from a truncated normal (stddev 1, cut at 2 stddev, as
  `tf.truncated_normal`) of shape [K, max_seq_len], shared by all users, and kept fixed
  (a `Constant`). ComiRec redraws it for every batch; a fixed draw makes `encode`
  deterministic, so evaluation and serving give the same interests for the same history.
  Columns are aligned to the most recent item (column max_seq_len - 1 = position n - 1).
* R = `model.mind.routing_iterations` (3 in MIND and ComiRec). The squash's 1e-9 keeps it
  finite at z = 0 (an all-padding history gives v = 0).
* Label-aware attention at training is `layers.label_aware_readout` (ComiRec's hard readout);
  at evaluation an item scores max_k q_k . h.

Initialization: the item table by `layers.init_item_table`; S and the projection kernel
Glorot-uniform; the projection bias zero.
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from sine_jax.models.layers import (
    Constant,
    dropout_rate,
    embed_history,
    init_item_table,
    require_int,
)

SQUASH_EPS = 1e-9  # ComiRec's epsilon inside the squash's square root
# model.dropout when None: the paper names no dropout; the rate drops out the history's item
# embeddings at training.
DEFAULT_DROPOUT = 0.0


# ---------------------------------------------------------------------------------------------
# Pure functions.


def squash(z: jax.Array) -> jax.Array:
    """The capsule non-linearity |z|^2 / (1 + |z|^2) * z / sqrt(|z|^2 + 1e-9), over the last axis.

    Args:
        z: [..., D].

    Returns:
        [..., D], norm < 1; zero (and finite, with finite gradients) at z = 0.
    """
    norm2 = jnp.sum(z * z, axis=-1, keepdims=True)
    return z * (norm2 / (1.0 + norm2) * jax.lax.rsqrt(norm2 + SQUASH_EPS))


def dynamic_routing(
    u_hat: jax.Array, mask: jax.Array, initial_logits: jax.Array, iterations: int
) -> jax.Array:
    """B2I dynamic routing (MIND eqs. 5-7, as ComiRec's `CapsuleNetwork`).

    Args:
        u_hat: [B, n, D] mapped behaviours x_t S (zero at padding).
        mask: [B, n] boolean, True at real items.
        initial_logits: [K, n] or [B, K, n] routing-logit start b0.
        iterations: R >= 1.

    Returns:
        v: [B, K, D] interest capsules (zero for an all-padding row). Gradients reach `u_hat`
        only through the last iteration's z = w u_hat (earlier ones see stop_gradient(u_hat)).
    """
    u_iter = jax.lax.stop_gradient(u_hat)
    b = jnp.broadcast_to(initial_logits, (u_hat.shape[0], *initial_logits.shape[-2:]))
    for r in range(iterations):
        w = jnp.where(mask[:, None, :], jax.nn.softmax(b, axis=1), 0.0)  # [B, K, n]
        if r < iterations - 1:
            v = squash(jnp.einsum("bkn,bnd->bkd", w, u_iter))
            b = b + jnp.einsum("bkd,bnd->bkn", v, u_iter)
        else:
            v = squash(jnp.einsum("bkn,bnd->bkd", w, u_hat))
    return v


def relu_projection(v: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """ComiRec's `proj` layer on each interest: relu(v W + c).

    Args:
        v: [B, K, D]; kernel: [D, D]; bias: [D].

    Returns:
        [B, K, D].
    """
    return jax.nn.relu(v @ kernel + bias)


# ---------------------------------------------------------------------------------------------
# Module.


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _init_values(
    key: jax.Array, num_items: int, table_rows: int, d: int, k: int, n: int
) -> dict[str, jax.Array]:
    """All of MIND's starting arrays in one compiled program (eager random ops compile one
    program per shape, about half a second each on a CPU)."""
    keys = jax.random.split(key, 4)
    glorot = jax.nn.initializers.glorot_uniform()
    return {
        "item_embedding": init_item_table(keys[0], num_items, table_rows, d),
        "bilinear": glorot(keys[1], (d, d)),
        "proj_kernel": glorot(keys[2], (d, d)),
        "proj_bias": jnp.zeros((d,)),
        "routing_logits": jax.random.truncated_normal(keys[3], -2.0, 2.0, (k, n)),
    }

class MIND(nnx.Module):
    """MIND user encoder: K interest capsules per user.

    Parameters: item_embedding [R, D], bilinear [D, D] (S), proj_kernel [D, D], proj_bias [D].
    Constant: routing_logits [K, max_seq_len] (b0).
    """

    def __init__(self, *, num_items: int, table_rows: int, model_config, rngs: nnx.Rngs):
        d = require_int("embed_dim", model_config.get("embed_dim"), 1)
        k = require_int("num_interests", model_config.get("num_interests"), 1)
        n = require_int("max_seq_len", model_config.get("max_seq_len"), 1)
        mind = model_config.get("mind") or {}
        self.iterations = require_int("mind.routing_iterations", mind.get("routing_iterations"), 1)
        values = _init_values(rngs.params(), num_items, table_rows, d, k, n)
        self.dropout = dropout_rate(model_config, DEFAULT_DROPOUT)
        self.item_embedding = nnx.Param(values["item_embedding"])
        self.bilinear = nnx.Param(values["bilinear"])
        self.proj_kernel = nnx.Param(values["proj_kernel"])
        self.proj_bias = nnx.Param(values["proj_bias"])
        self.routing_logits = Constant(values["routing_logits"])

    def encode(self, history: jax.Array, dropout_rng: jax.Array | None = None) -> jax.Array:
        """Interests of each user.

        Args:
            history: int32 [B, n] item ids, n <= max_seq_len, 0 = padding, left-padded.
            dropout_rng: at training, the key of the dropout on the history's embeddings.

        Returns:
            [B, K, D] interests.
        """
        n = history.shape[1]
        mask = history > 0
        _, project = embed_history(self.item_embedding[...], history, self.dropout, dropout_rng)
        u_hat = project(self.bilinear[...])
        b0 = self.routing_logits[...][:, -n:]  # aligned to the most recent item
        v = dynamic_routing(u_hat, mask, b0, self.iterations)
        return relu_projection(v, self.proj_kernel[...], self.proj_bias[...])
