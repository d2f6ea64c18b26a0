"""ComiRec-SA: the self-attentive multi-interest extractor of ComiRec (Cen et al., KDD 2020),
as in the authors' public code (THUDM/ComiRec, `src/model.py`, `Model_ComiRec_SA`).

Shape legend: B batch, n history length, K interests, D embedding dim, H attention hidden
size. Histories are left-padded with the padding id 0 (most recent item at n - 1).

  A = softmax_t(tanh((X + P) W1 + b1) W2)   masked to the real positions, per interest k
  V = A^T X                                  [B, K, D]

Choices (the authors' code where the paper is silent):
* The learned positional embeddings P [n, D] go into the attention input only; the values
  are the raw item embeddings X (the code's `interest_emb = matmul(item_att_w,
  item_list_emb)`, where `item_list_emb` has no positions). Row n - 1 of P is the most recent
  item (ComiRec's iterator right-pads, so there row 0 is the oldest item of the window; here
  histories are left-padded and positions count back from the most recent item, as in SINE).
* The first dense layer has a bias b1 (zeros at init) as `tf.layers.dense`; the second
  layer's bias is left out: it adds the same constant to every position of an interest, so it
  cancels in the softmax over positions.
* H = `model.comirec_sa.attention_hidden`, 0 meaning 4 D (the code's `hidden_size * 4`).
* An all-padding history gives zero interests (the masked softmax returns zeros).

Initialization: item table by `layers.init_item_table`; P, W1, W2 Glorot-uniform; b1 zero.
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from sine_jax.models.layers import (
    dropout_rate,
    embed_history,
    init_item_table,
    masked_softmax,
    require_int,
)

# model.dropout when None: the paper names no dropout; the rate drops out the history's item
# embeddings at training.
DEFAULT_DROPOUT = 0.0

# ---------------------------------------------------------------------------------------------
# Pure functions.


def multi_interest_self_attention(
    x: jax.Array,
    mask: jax.Array,
    pos: jax.Array,
    w1: jax.Array,
    b1: jax.Array,
    w2: jax.Array,
    *,
    x_w1: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """A = masked softmax_t(tanh((X + P) W1 + b1) W2); interests = A^T X.

    Args:
        x: [B, n, D] item embeddings (zero at padding), the values.
        mask: [B, n] boolean, True at real items.
        pos: [n, D] positional embeddings, added to the attention input only.
        w1: [D, H]; b1: [H]; w2: [H, K].
        x_w1: optional [B, n, H] X W1 computed elsewhere (`project_items`); else x @ w1.

    Returns:
        interests: [B, K, D]; attention: [B, n, K] (sums to 1 over real t, 0 at padding).
    """
    projected = x @ w1 if x_w1 is None else x_w1
    logits = jnp.tanh(projected + pos @ w1 + b1) @ w2  # [B, n, K]
    attention = masked_softmax(logits, mask[..., None], axis=1)
    return jnp.einsum("bnk,bnd->bkd", attention, x), attention


# ---------------------------------------------------------------------------------------------
# Module.


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5, 6))
def _init_values(
    key: jax.Array, num_items: int, table_rows: int, d: int, k: int, n: int, hidden: int
) -> dict[str, jax.Array]:
    """All of ComiRec-SA's starting arrays in one compiled program (eager random ops compile
    one program per shape, about half a second each on a CPU)."""
    keys = jax.random.split(key, 4)
    glorot = jax.nn.initializers.glorot_uniform()
    return {
        "item_embedding": init_item_table(keys[0], num_items, table_rows, d),
        "position_embedding": glorot(keys[1], (n, d)),
        "attention_w1": glorot(keys[2], (d, hidden)),
        "attention_b1": jnp.zeros((hidden,)),
        "attention_w2": glorot(keys[3], (hidden, k)),
    }

class ComiRecSA(nnx.Module):
    """ComiRec-SA user encoder: K interests per user.

    Parameters: item_embedding [R, D], position_embedding [max_seq_len, D], attention_w1
    [D, H], attention_b1 [H], attention_w2 [H, K].
    """

    def __init__(self, *, num_items: int, table_rows: int, model_config, rngs: nnx.Rngs):
        d = require_int("embed_dim", model_config.get("embed_dim"), 1)
        k = require_int("num_interests", model_config.get("num_interests"), 1)
        n = require_int("max_seq_len", model_config.get("max_seq_len"), 1)
        sa = model_config.get("comirec_sa") or {}
        hidden = (
            require_int("comirec_sa.attention_hidden", sa.get("attention_hidden", 0), 0) or 4 * d
        )
        values = _init_values(rngs.params(), num_items, table_rows, d, k, n, hidden)
        self.dropout = dropout_rate(model_config, DEFAULT_DROPOUT)
        self.item_embedding = nnx.Param(values["item_embedding"])
        self.position_embedding = nnx.Param(values["position_embedding"])
        self.attention_w1 = nnx.Param(values["attention_w1"])
        self.attention_b1 = nnx.Param(values["attention_b1"])
        self.attention_w2 = nnx.Param(values["attention_w2"])

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
        x, project = embed_history(self.item_embedding[...], history, self.dropout, dropout_rng)
        w1 = self.attention_w1[...]
        interests, _ = multi_interest_self_attention(
            x,
            mask,
            self.position_embedding[...][-n:],
            w1,
            self.attention_b1[...],
            self.attention_w2[...],
            x_w1=project(w1),
        )
        return interests
