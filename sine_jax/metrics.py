"""Full-ranking metrics over all items 1..M (DESIGN.md section 5).

One target per user (leave-one-out): the target's rank among all items, then HR@N and NDCG@N.
Several targets per user (held-out users): the top-k items, then Recall@N, NDCG@N and
HitRate@N.

Shapes: B users, D dim, M items (ids 1..M; 0 = padding), H history length of the
exclusion lists, T targets per user, K top items kept.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def target_ranks(
    user_vectors: jax.Array,
    item_table: jax.Array,
    targets: jax.Array,
    exclude: jax.Array | None = None,
    *,
    chunk_size: int = 65536,
) -> jax.Array:
    """1-based rank of each target among items 1..M by inner product, ties against the target.

    rank = 1 + #{i in 1..M, i != target, i not excluded : s_i >= s_target}. The item table
    is scored in chunks of `chunk_size` rows, so no [B, M] matrix larger than [B, chunk]
    exists. Excluded items (the user's history; 0 = padding, duplicates allowed) are taken
    out of the count; the target itself is never excluded.

    Args:
      user_vectors: [B, D].
      item_table: [M + 1, D] (row 0 = padding).
      targets: int32 [B] in 1..M.
      exclude: int32 [B, H] item ids removed from the ranking, or None.
      chunk_size: rows of the item table scored at once.

    Returns:
      ranks: int32 [B].
    """
    num_rows = item_table.shape[0]
    target_scores = jnp.sum(user_vectors * item_table[targets], axis=-1)  # [B]

    def count_better(ids, scores):  # ids [C] or [B, C]; scores [B, C]
        ahead = (scores >= target_scores[:, None]) & (ids != targets[:, None]) & (ids > 0)
        return jnp.sum(ahead, axis=1, dtype=jnp.int32)

    chunk = min(chunk_size, num_rows)
    num_chunks = -(-num_rows // chunk)
    padded = jnp.pad(item_table, ((0, num_chunks * chunk - num_rows), (0, 0)))
    chunks = padded.reshape(num_chunks, chunk, -1)  # [C, chunk, D]

    def body(count, inputs):
        index, table_chunk = inputs
        ids = index * chunk + jnp.arange(chunk)  # [chunk]
        ids = jnp.where(ids < num_rows, ids, 0)  # padding rows never count
        return count + count_better(ids[None, :], user_vectors @ table_chunk.T), None

    count, _ = jax.lax.scan(
        body, jnp.zeros(targets.shape, jnp.int32), (jnp.arange(num_chunks), chunks)
    )
    if exclude is not None:
        ordered = jnp.sort(exclude, axis=1)  # [B, H]
        first = jnp.concatenate(
            [jnp.ones_like(ordered[:, :1], bool), ordered[:, 1:] != ordered[:, :-1]], axis=1
        )
        unique = jnp.where(first, ordered, 0)  # duplicates become padding
        scores = jnp.einsum("bd,bhd->bh", user_vectors, item_table[unique])  # [B, H]
        count -= count_better(unique, scores)
    return count + 1


def rank_metrics(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """HR@N and NDCG@N (N in ks) from 1-based ranks; NDCG@N = 1/log2(1 + rank) if rank <= N.

    Args:
      ranks: int [U] 1-based target ranks of the evaluated users.
      ks: cut-offs N.

    Returns:
      {"HR@N": fraction in [0, 1], "NDCG@N": ...} for each N.
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ValueError("rank_metrics needs at least one rank")
    out = {}
    for k in ks:
        hit = ranks <= k
        out[f"HR@{k}"] = float(np.mean(hit))
        out[f"NDCG@{k}"] = float(np.mean(np.where(hit, 1.0 / np.log2(1.0 + ranks), 0.0)))
    return out


def top_items(
    user_vectors: jax.Array,
    item_table: jax.Array,
    exclude: jax.Array | None = None,
    *,
    k: int,
    chunk_size: int = 65536,
) -> jax.Array:
    """The k best items among 1..M by inner product, best first; ties: the lower id first.

    The item table is scored in chunks of `chunk_size` rows, merging each chunk's scores into
    a running top-k, so no [B, M] matrix larger than [B, chunk + k] exists. Excluded items
    (0 = padding, duplicates allowed) are never returned. When fewer than k items are left,
    the missing places hold 0.

    Args:
      user_vectors: [B, D].
      item_table: [M + 1, D] (row 0 = padding).
      exclude: int32 [B, H] item ids removed from the ranking, or None.
      k: how many items to return.
      chunk_size: rows of the item table scored at once.

    Returns:
      items: int32 [B, k].
    """
    num_rows = item_table.shape[0]
    batch = user_vectors.shape[0]
    chunk = min(chunk_size, num_rows)
    num_chunks = -(-num_rows // chunk)
    padded = jnp.pad(item_table, ((0, num_chunks * chunk - num_rows), (0, 0)))
    chunks = padded.reshape(num_chunks, chunk, -1)  # [C, chunk, D]
    rows = jnp.arange(batch)[:, None]

    def body(best, inputs):
        best_scores, best_ids = best  # [B, k] each
        index, table_chunk = inputs
        first = index * chunk
        ids = first + jnp.arange(chunk, dtype=jnp.int32)  # [chunk]
        scores = user_vectors @ table_chunk.T  # [B, chunk]
        scores = jnp.where((ids > 0) & (ids < num_rows), scores, -jnp.inf)
        if exclude is not None:
            local = exclude - first  # [B, H]; out-of-chunk places are dropped
            local = jnp.where((exclude > 0) & (local >= 0) & (local < chunk), local, chunk)
            scores = scores.at[rows, local].set(-jnp.inf, mode="drop")
        merged_scores = jnp.concatenate([best_scores, scores], axis=1)  # [B, k + chunk]
        merged_ids = jnp.concatenate([best_ids, jnp.broadcast_to(ids, scores.shape)], axis=1)
        top_scores, where = jax.lax.top_k(merged_scores, k)  # equal scores: lower index first
        return (top_scores, jnp.take_along_axis(merged_ids, where, axis=1)), None

    init = (jnp.full((batch, k), -jnp.inf, user_vectors.dtype), jnp.zeros((batch, k), jnp.int32))
    (scores, ids), _ = jax.lax.scan(body, init, (jnp.arange(num_chunks), chunks))
    return jnp.where(scores > -jnp.inf, ids, 0)


def multi_target_metrics(
    top: np.ndarray, targets: np.ndarray, ks: Sequence[int]
) -> dict[str, float]:
    """Recall@N, NDCG@N and HitRate@N (N in ks), averaged over users, from top-k lists.

    With hits = the targets among the first N items of `top` (|targets| = a user's distinct
    targets): Recall@N = |hits| / |targets|; NDCG@N = sum over hits at 1-based position p of
    1/log2(1 + p), divided by the ideal sum over p = 1..min(|targets|, N); HitRate@N = 1 if any
    hit.

    Args:
      top: int [U, K] each user's recommended items, best first, distinct (0 = none); K >=
        max(ks).
      targets: int [U, T] each user's target items, 0 = padding; at least one per user.
      ks: cut-offs N.

    Returns:
      {"Recall@N", "NDCG@N", "HitRate@N"}: fractions in [0, 1], for each N.
    """
    top, targets = np.asarray(top, np.int64), np.asarray(targets, np.int64)
    num_users = len(top)
    if num_users == 0 or len(targets) != num_users:
        raise ValueError(f"need the same number (>= 1) of top lists and target lists; got "
                         f"{num_users} and {len(targets)}")
    if top.shape[1] < max(ks):
        raise ValueError(f"top has {top.shape[1]} items per user; need max(ks) = {max(ks)}")
    stride = int(max(top.max(initial=0), targets.max(initial=0))) + 1
    row_key = np.arange(num_users, dtype=np.int64)[:, None] * stride
    target_keys = np.unique((row_key + targets)[targets > 0])
    num_targets = np.bincount(target_keys // stride, minlength=num_users)
    if np.any(num_targets == 0):
        raise ValueError(f"user {int(np.argmin(num_targets))} has no target")
    hits = np.isin(row_key + top, target_keys) & (top > 0)  # [U, K]
    out = {}
    for k in ks:
        gains = 1.0 / np.log2(np.arange(2, k + 2))  # [k], position p -> 1/log2(1 + p)
        hit = hits[:, :k]
        ideal = np.cumsum(gains)[np.minimum(num_targets, k) - 1]
        out[f"Recall@{k}"] = float(np.mean(hit.sum(axis=1) / num_targets))
        out[f"NDCG@{k}"] = float(np.mean(hit @ gains / ideal))
        out[f"HitRate@{k}"] = float(np.mean(hit.any(axis=1)))
    return out
