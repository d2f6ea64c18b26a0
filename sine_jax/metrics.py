"""Full-ranking metrics: the target's rank among all items, then HR@N and NDCG@N.

Shapes: B users, D dim, M items (ids 1..M; 0 = padding), H history length of the
exclusion lists.
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
