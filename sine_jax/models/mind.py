"""MIND: Multi-Interest Network with Dynamic routing (Li et al., CIKM 2019), as a K-interest
user encoder: the paper's behaviour-to-interest routing, dynamic number of interests and
label-aware attention, with ComiRec's public re-implementation (THUDM/ComiRec, `src/model.py`,
`CapsuleNetwork` with `bilinear_type=0`, used by `Model_MIND`) where the paper is silent.

Shape legend: B batch, n history length, K interests (`model.num_interests`, the paper's K),
D embedding dim. Histories are left-padded with the padding id 0 (most recent item at n - 1);
`mask` is `history > 0`.

Dynamic number of interests (the paper's K'_u = max(1, min(K, log2 |I_u|)), rounded down):
a user whose window holds L real items gets K' = max(1, min(K, floor(log2 L))) interest
capsules, the first K' of the K (`model.mind.dynamic_interests`; False: always K). |I_u| is
the history the encoder sees, the last n <= max_seq_len items.

Behaviour-to-interest (B2I) dynamic routing (the paper's Algorithm 1), over the K' active
capsules only:
  u_hat_t = x_t S                         (one bilinear map S [D, D] shared by all k)
  b_kt    = b0_kt                         (the routing-logit start, see below)
  for r = 1..R:
      w_kt = softmax over active k of b_kt, 0 at padded t
      z_k  = sum_t w_kt u_hat_t
      v_k  = squash(z_k) = |z|^2 / (1 + |z|^2) * z / sqrt(|z|^2 + 1e-9)
      if r < R: b_kt += v_k . u_hat_t
then each interest goes through one ReLU layer, relu(v_k W + c), the paper's "ReLU layers"
(which there also read a user-profile embedding; we have none) as ComiRec's `proj` layer.

Label-aware attention at training: the query of an example is
sum_k softmax_k(pow(q_k . e, p)) q_k over the active interests, e the target's embedding
(`layers.label_aware_readout`), p = `model.mind.label_power`. The default (None) is
p = inf, hard attention (the interest nearest the target), the paper's best setting: in its "Analysis of
Hyper-parameters" ("Power number in label-aware attention") the results improve as p grows
and hard attention performs best and converges fastest; p = 0 (the mean) is worst. ComiRec's
code uses hard attention too. At evaluation each active interest retrieves and an item
scores max over the active k of q_k . h (the paper's serving); the inactive capsules are
returned as copies of the first (always active) one, so that max over all K is max over the
active ones.

Choices where the paper leaves a detail open (ComiRec's code unless said otherwise):
* One shared S without bias (the paper's shared bilinear map; ComiRec's dense layer also has
  a bias, which would make padded u_hat nonzero; its routing weight there is 0).
* u_hat is under stop_gradient in every iteration before the last (ComiRec's `stop_grad`;
  the paper says nothing on it), so the routing weights are constants for the gradient and
  only the last z_k = sum w u_hat carries gradients into S and the item table.
* b0: the paper starts the logits from a Gaussian draw inside the routing (its Algorithm 1),
  because with one shared S equal starts would give K equal capsules; ComiRec draws a
  truncated normal (stddev 1, cut at 2) [B, K, n] for every batch. At training b0 is drawn
  so, afresh for every example and step (from the step's key, `encode`'s `dropout_rng`). At
  evaluation and serving, where the paper is silent, b0 is one fixed draw of the same
  distribution made at construction ([K, max_seq_len], shared by all users, a `Constant`,
  its columns aligned to the most recent item), so `encode` is deterministic.
* R = `model.mind.routing_iterations` (3, as ComiRec). The squash's 1e-9 keeps it finite at
  z = 0 (an all-padding history gives v = 0).
* A finite p keeps the score's sign, sign(s)|s|^p (the paper's pow is s^p, which for even p
  would favour an interest far on the wrong side of the target).
* floor(log2 L): the paper's formula is not an integer; it is rounded down here.

Initialization: the item table by `layers.init_item_table`; S and the projection kernel
Glorot-uniform; the projection bias zero.
"""

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from sine_jax.errors import ConfigError
from sine_jax.models.layers import (
    Constant,
    dropout_rate,
    embed_history,
    init_item_table,
    label_aware_readout,
    masked_softmax,
    require_int,
)

SQUASH_EPS = 1e-9  # ComiRec's epsilon inside the squash's square root
# Folded into the training key for the routing-logit draws (the dropout uses the key itself).
ROUTING_STREAM = 1
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


def active_interests(mask: jax.Array, num_interests: int) -> jax.Array:
    """The paper's dynamic number of interests: the first K' = max(1, min(K, floor(log2 L)))
    of the K capsules are active for a history of L real items.

    Args:
        mask: [B, n] boolean, True at real items.
        num_interests: K.

    Returns:
        bool [B, K]; row b is True at k < K'_b (at least the first capsule, also for L = 0).
    """
    length = jnp.sum(mask, axis=1, dtype=jnp.int32)  # [B]
    # floor(log2 L) = #{j >= 1: 2^j <= L} for L >= 1, in exact integer arithmetic.
    powers = 2 ** jnp.arange(1, num_interests + 1, dtype=jnp.int32)  # [K]
    k_user = jnp.maximum(1, jnp.sum(length[:, None] >= powers, axis=1))  # [B], <= K
    return jnp.arange(num_interests) < k_user[:, None]


def dynamic_routing(
    u_hat: jax.Array,
    mask: jax.Array,
    initial_logits: jax.Array,
    iterations: int,
    active: jax.Array | None = None,
) -> jax.Array:
    """B2I dynamic routing (the MIND paper's Algorithm 1, as ComiRec's `CapsuleNetwork`).

    Args:
        u_hat: [B, n, D] mapped behaviours x_t S (zero at padding).
        mask: [B, n] boolean, True at real items.
        initial_logits: [K, n] or [B, K, n] routing-logit start b0.
        iterations: R >= 1.
        active: optional bool [B, K], the capsules the behaviours are routed to (each real
            item's weights sum to 1 over them); None = all K.

    Returns:
        v: [B, K, D] interest capsules (zero for an inactive capsule and for an all-padding
        row). Gradients reach `u_hat` only through the last iteration's z = w u_hat (earlier
        ones see stop_gradient(u_hat)).
    """
    u_iter = jax.lax.stop_gradient(u_hat)
    b = jnp.broadcast_to(initial_logits, (u_hat.shape[0], *initial_logits.shape[-2:]))
    routed = mask[:, None, :]  # [B, 1, n]
    if active is not None:
        routed = routed & active[:, :, None]  # [B, K, n]
    for r in range(iterations):
        w = masked_softmax(b, routed, axis=1)  # [B, K, n], 0 at padding and inactive k
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


def label_power(value) -> float:
    """p of `model.mind.label_power`: None -> inf (hard attention), else 0 or a number >= 1."""
    if value is None:
        return math.inf
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not (value == 0 or value >= 1):
        raise ConfigError(
            f"model.mind.label_power={value!r} must be None (hard attention, the paper's "
            "best), 0 or a number >= 1"
        )
    return float(value)


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
    """MIND user encoder: K interest capsules per user, the first K' of them active.

    Parameters: item_embedding [R, D], bilinear [D, D] (S), proj_kernel [D, D], proj_bias [D].
    Constant: routing_logits [K, max_seq_len] (b0 at evaluation).
    """

    def __init__(self, *, num_items: int, table_rows: int, model_config, rngs: nnx.Rngs):
        d = require_int("embed_dim", model_config.get("embed_dim"), 1)
        k = require_int("num_interests", model_config.get("num_interests"), 1)
        n = require_int("max_seq_len", model_config.get("max_seq_len"), 1)
        mind = model_config.get("mind") or {}
        self.iterations = require_int("mind.routing_iterations", mind.get("routing_iterations"), 1)
        self.label_power = label_power(mind.get("label_power"))
        dynamic = mind.get("dynamic_interests", True)
        if not isinstance(dynamic, bool):
            raise ConfigError(f"model.mind.dynamic_interests={dynamic!r} must be True or False")
        self.dynamic_interests = dynamic
        self.num_interests = k
        values = _init_values(rngs.params(), num_items, table_rows, d, k, n)
        self.dropout = dropout_rate(model_config, DEFAULT_DROPOUT)
        self.item_embedding = nnx.Param(values["item_embedding"])
        self.bilinear = nnx.Param(values["bilinear"])
        self.proj_kernel = nnx.Param(values["proj_kernel"])
        self.proj_bias = nnx.Param(values["proj_bias"])
        self.routing_logits = Constant(values["routing_logits"])

    def active_interests(self, history: jax.Array) -> jax.Array:
        """bool [B, K]: the capsules of each history that retrieve (all K without
        `dynamic_interests`)."""
        mask = history > 0
        if not self.dynamic_interests:
            return jnp.ones((history.shape[0], self.num_interests), bool)
        return active_interests(mask, self.num_interests)

    def encode(self, history: jax.Array, dropout_rng: jax.Array | None = None) -> jax.Array:
        """Interests of each user.

        Args:
            history: int32 [B, n] item ids, n <= max_seq_len, 0 = padding, left-padded.
            dropout_rng: at training, the key of the dropout on the history's embeddings
                and of the routing-logit start; None (evaluation): the fixed start.

        Returns:
            [B, K, D] interests; an inactive capsule k >= K' is a copy of the first.
        """
        n = history.shape[1]
        mask = history > 0
        active = self.active_interests(history)
        _, project = embed_history(self.item_embedding[...], history, self.dropout, dropout_rng)
        u_hat = project(self.bilinear[...])
        if dropout_rng is None:  # evaluation: the fixed draw, aligned to the most recent item
            b0 = self.routing_logits[...][:, -n:]
        else:  # training: a fresh draw per example (the paper's Algorithm 1, ComiRec)
            key = jax.random.fold_in(dropout_rng, ROUTING_STREAM)
            shape = (history.shape[0], self.num_interests, n)
            b0 = jax.random.truncated_normal(key, -2.0, 2.0, shape)
        v = dynamic_routing(u_hat, mask, b0, self.iterations, active)
        interests = relu_projection(v, self.proj_kernel[...], self.proj_bias[...])
        return jnp.where(active[..., None], interests, interests[:, :1])

    def label_aware_query(
        self, interests: jax.Array, target_rows: jax.Array, history: jax.Array
    ) -> jax.Array:
        """The training query: label-aware attention with power `label_power` over the active
        interests (`layers.label_aware_readout`).

        Args:
            interests: [B, K, D] from `encode`; target_rows: [B, D]; history: int32 [B, n].

        Returns:
            [B, D].
        """
        return label_aware_readout(
            interests, target_rows, self.label_power, self.active_interests(history)
        )
