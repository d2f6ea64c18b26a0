"""Training losses: sampled softmax (eq 9), full softmax, covariance regularizer (eqs 10-11).

Shapes: B batch, D embedding dim, M items (ids 1..M, row 0 of the item table is padding),
S sampled negatives shared by the batch, L prototypes.
"""

import jax
import jax.numpy as jnp


def log_uniform_sample(rng: jax.Array, num_samples: int, num_items: int) -> jax.Array:
    """Draws ids from the log-uniform distribution over 1..M, with replacement.

    q(i) = log((i + 1) / i) / log(M + 1). Inverse CDF: CDF(i) = log(i + 1) / log(M + 1), so
    i = floor(exp(u log(M + 1))) for u ~ U[0, 1). Cost O(S), independent of M.

    Returns:
      ids: int32 [S] in 1..M.
    """
    u = jax.random.uniform(rng, (num_samples,), dtype=jnp.float32)
    ids = jnp.floor(jnp.exp(u * jnp.log(num_items + 1.0)))
    return jnp.clip(ids, 1, num_items).astype(jnp.int32)


def log_uniform_prob(ids: jax.Array, num_items: int) -> jax.Array:
    """q(i) of `log_uniform_sample` for ids in 1..M. Returns float32 of ids' shape."""
    ids = ids.astype(jnp.float32)
    return jnp.log1p(1.0 / ids) / jnp.log(num_items + 1.0)


def sampled_softmax_loss(
    user_vectors: jax.Array,
    target_rows: jax.Array,
    sampled_rows: jax.Array,
    targets: jax.Array,
    sampled: jax.Array,
    num_items: int,
    *,
    logq_correction: bool = True,
    remove_accidental_hits: bool = True,
) -> jax.Array:
    """Sampled softmax of eq 9 with negatives shared by the batch.

    The true item competes with the S sampled ids (drawn by `log_uniform_sample`); with
    `logq_correction`, log(S q(i)) is subtracted from every logit (true and sampled), which
    makes the loss an unbiased-in-the-limit estimate of the full softmax; samples equal to an
    example's target are masked out of that example's softmax (`remove_accidental_hits`).
    The caller gathers the rows, so they can come from the whole table or from the rows a
    step touches (row-sparse updates).

    Args:
      user_vectors: [B, D] user representations v^u.
      target_rows: [B, D] embeddings of the targets.
      sampled_rows: [S, D] embeddings of the sampled ids.
      targets: int32 [B] target ids in 1..M.
      sampled: int32 [S] sampled ids in 1..M.
      num_items: M.

    Returns:
      loss: [B] per-example negative log-likelihood.
    """
    num_samples = sampled.shape[0]
    true_logits = jnp.sum(user_vectors * target_rows, axis=-1)  # [B]
    sampled_logits = user_vectors @ sampled_rows.T  # [B, S]
    if logq_correction:
        true_logits -= jnp.log(num_samples * log_uniform_prob(targets, num_items))
        sampled_logits -= jnp.log(num_samples * log_uniform_prob(sampled, num_items))[None, :]
    if remove_accidental_hits:
        hit = sampled[None, :] == targets[:, None]  # [B, S]
        sampled_logits = jnp.where(hit, -jnp.inf, sampled_logits)
    logits = jnp.concatenate([true_logits[:, None], sampled_logits], axis=1)  # [B, 1 + S]
    return jax.nn.logsumexp(logits, axis=1) - true_logits


def full_softmax_loss(
    user_vectors: jax.Array, item_table: jax.Array, targets: jax.Array, num_items: int
) -> jax.Array:
    """Exact eq 9: softmax over all items 1..M.

    Row 0 (padding) and rows past M (padding added to split the table over devices) are
    left out; the table stays whole (no slicing), so a row-sharded table stays sharded.

    Args:
      user_vectors: [B, D]; item_table: [R, D] with R >= M + 1; targets: int32 [B] in 1..M;
      num_items: M.

    Returns:
      loss: [B] per-example negative log-likelihood.
    """
    logits = user_vectors @ item_table.T  # [B, R]
    ids = jnp.arange(item_table.shape[0])
    logits = jnp.where((ids >= 1) & (ids <= num_items), logits, -jnp.inf)
    true_logits = jnp.sum(user_vectors * item_table[targets], axis=-1)
    return jax.nn.logsumexp(logits, axis=1) - true_logits


def covariance_regularizer(prototypes: jax.Array) -> jax.Array:
    """L_c of eqs 10-11 (DeCov over prototypes).

    Each prototype is a variable observed over its D entries: Cbar subtracts each row's mean,
    M = (1/D) (C - Cbar)(C - Cbar)^T is [L, L], L_c = 0.5 (||M||_F^2 - ||diag M||_2^2).

    Args:
      prototypes: [L, D] prototype matrix C.

    Returns:
      scalar L_c.
    """
    centered = prototypes - jnp.mean(prototypes, axis=1, keepdims=True)  # [L, D]
    cov = centered @ centered.T / prototypes.shape[1]  # [L, L]
    return 0.5 * (jnp.sum(cov**2) - jnp.sum(jnp.diagonal(cov) ** 2))
