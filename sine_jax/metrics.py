"""Full-ranking metrics over all items 1..M.

One target per user (leave-one-out): the target's rank among all items, then HR@N and NDCG@N.
Several targets per user (held-out users): the top-k items, then Recall@N, NDCG@N and
HitRate@N.

The item table has R >= M + 1 rows: row 0 is padding and rows M + 1..R - 1 (pad rows that make
R a multiple of the 'model' mesh axis) are never ranked. The `sharded_*` functions split the
table's rows over the 'model' axis and the users over 'data' (jax.shard_map); they give exactly
the unsharded results. A NaN score (from non-finite parameters) counts as -inf: it is never a
hit, and a target that scores NaN ranks last.

Shapes: B users, D dim, M items (ids 1..M; 0 = padding), R item-table rows, H history length of
the exclusion lists, T targets per user, K top items kept, S size of the 'model' axis.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

ScanStep = Callable[[Any, jax.Array, jax.Array, jax.Array], Any]


def _num_items(item_table: jax.Array, num_items: int | None) -> int:
    """M: `num_items`, or the table's rows - 1 when None; at most the table's rows - 1."""
    rows = item_table.shape[0]
    if num_items is None:
        return rows - 1
    if not 0 <= num_items < rows:
        raise ValueError(f"num_items={num_items} needs 0 <= num_items < the {rows} table rows")
    return num_items


def _scan_table(
    step: ScanStep,
    init: Any,
    item_table: jax.Array,
    exclude: jax.Array | None,
    *,
    num_users: int,
    first_id: int | jax.Array,
    num_items: int,
    chunk_size: int,
) -> Any:
    """Folds `step` over the rows of `item_table` in chunks of `chunk_size` rows.

    The table may be one shard of the full table: its row r is item `first_id + r`. `step`
    scores each chunk, so no [B, R] matrix larger than [B, chunk] need exist.

    Args:
      step: (carry, ids int32 [chunk], table_chunk [chunk, D], valid bool [B, chunk]) ->
        carry. ids are global item ids; valid is False for id 0, ids > num_items, rows past
        the table's end (the last chunk's filler) and excluded items.
      init: the initial carry.
      item_table: [R_local, D], rows of items first_id..first_id + R_local - 1.
      exclude: int32 [B, H] global item ids to mark invalid (0 = padding, duplicates and ids
        outside this table allowed), or None.
      num_users: B.
      first_id: the item id of the table's row 0 (traced inside shard_map).
      num_items: M; ids above it are pad rows.
      chunk_size: rows scored at once.

    Returns:
      The final carry.
    """
    num_rows = item_table.shape[0]
    chunk = min(chunk_size, num_rows)
    num_chunks = -(-num_rows // chunk)
    padded = jnp.pad(item_table, ((0, num_chunks * chunk - num_rows), (0, 0)))
    chunks = padded.reshape(num_chunks, chunk, -1)  # [C, chunk, D]
    users = jnp.arange(num_users)[:, None]

    def body(carry, inputs):
        index, table_chunk = inputs
        start = index * chunk
        rows = start + jnp.arange(chunk, dtype=jnp.int32)  # [chunk], local rows
        ids = first_id + rows
        valid = jnp.broadcast_to(
            (rows < num_rows) & (ids > 0) & (ids <= num_items), (num_users, chunk)
        )
        if exclude is not None:
            places = exclude - (first_id + start)  # [B, H]; out-of-chunk places are dropped
            places = jnp.where((places >= 0) & (places < chunk), places, chunk)
            valid = valid.at[users, places].set(False, mode="drop")
        return step(carry, ids, table_chunk, valid), None

    carry, _ = jax.lax.scan(body, init, (jnp.arange(num_chunks), chunks))
    return carry


def _scores(queries: jax.Array, rows: jax.Array) -> jax.Array:
    """Scores [B, C] of rows [C, D] for queries [B, D], or for K queries per user [B, K, D]
    the best of the K (ranking by it = merging the K per-interest top-N lists by score).

    A NaN score (non-finite parameters) is -inf: that item ranks behind every other, and a
    target scoring NaN has every item ahead of it, so NaN never counts as a hit."""
    if queries.ndim == 2:
        scores = queries @ rows.T
    else:
        scores = jnp.einsum("bkd,cd->bkc", queries, rows)
    scores = jnp.where(jnp.isnan(scores), -jnp.inf, scores)
    return scores if queries.ndim == 2 else jnp.max(scores, axis=1)


def _count_ahead(
    user_vectors: jax.Array,
    item_table: jax.Array,
    targets: jax.Array,
    target_rows: jax.Array,
    exclude: jax.Array | None,
    *,
    first_id: int | jax.Array,
    num_items: int,
    chunk_size: int,
) -> jax.Array:
    """#{valid items of `item_table` other than the target scoring >= the target}: int32 [B].

    The target rows are scored in the same matrix product as each chunk (B more columns), so
    a target's score comes from the very operation that scores the items: a row equal to the
    target's ties with it. (A separately computed target score, e.g. sum(u * row), rounds
    differently depending on how XLA fuses it.)

    Args:
      user_vectors: [B, D], or [B, K, D] (an item scores its best of the K).
      item_table, exclude, first_id, num_items, chunk_size: as `_scan_table`.
      targets: int32 [B] global item ids.
      target_rows: [B, D] their rows of the full table.
    """

    def step(count, ids, table_chunk, valid):
        chunk = table_chunk.shape[0]
        scores = _scores(user_vectors, jnp.concatenate([table_chunk, target_rows]))  # [B, chunk+B]
        target_scores = jnp.diagonal(scores[:, chunk:])  # [B]
        ahead = valid & (scores[:, :chunk] >= target_scores[:, None]) & (ids != targets[:, None])
        return count + jnp.sum(ahead, axis=1, dtype=jnp.int32)

    return _scan_table(
        step, jnp.zeros(targets.shape, jnp.int32), item_table, exclude,
        num_users=user_vectors.shape[0], first_id=first_id, num_items=num_items,
        chunk_size=chunk_size,
    )


def _merge_top_k(scores: jax.Array, ids: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """The k best of scores [B, N] and their ids [B, N], best first; equal scores keep their order.

    Returns:
      (scores [B, k], ids int32 [B, k]).
    """
    top_scores, where = jax.lax.top_k(scores, k)  # equal scores: lower index first
    return top_scores, jnp.take_along_axis(ids, where, axis=1)


def _local_top_k(
    user_vectors: jax.Array,
    item_table: jax.Array,
    exclude: jax.Array | None,
    *,
    first_id: int | jax.Array,
    num_items: int,
    k: int,
    chunk_size: int,
) -> tuple[jax.Array, jax.Array]:
    """The k best valid items of `item_table`, best first; equal scores: the lower id first.

    Each chunk is merged into a running top-k (no [B, R] matrix larger than [B, chunk + k]).
    user_vectors [B, D]; other args as `_scan_table`.

    Returns:
      (scores [B, k], ids int32 [B, k]); places with no valid item left score -inf.
    """

    def step(best, ids, table_chunk, valid):
        scores = jnp.where(valid, _scores(user_vectors, table_chunk), -jnp.inf)  # [B, chunk]
        merged_scores = jnp.concatenate([best[0], scores], axis=1)  # [B, k + chunk]
        merged_ids = jnp.concatenate([best[1], jnp.broadcast_to(ids, scores.shape)], axis=1)
        return _merge_top_k(merged_scores, merged_ids, k)

    batch = user_vectors.shape[0]
    init = (jnp.full((batch, k), -jnp.inf, user_vectors.dtype), jnp.zeros((batch, k), jnp.int32))
    return _scan_table(
        step, init, item_table, exclude,
        num_users=batch, first_id=first_id, num_items=num_items, chunk_size=chunk_size,
    )


def _ids_or_zero(scores: jax.Array, ids: jax.Array) -> jax.Array:
    """ids [B, k], with 0 where no valid item was left (score -inf)."""
    return jnp.where(scores > -jnp.inf, ids, 0)


def _model_shard_rows(item_table: jax.Array, mesh: jax.sharding.Mesh) -> int:
    """Rows per 'model' shard of the table; R must be a multiple of the 'model' axis size."""
    rows, shards = item_table.shape[0], mesh.shape["model"]
    if rows % shards:
        raise ValueError(f"the item table's {rows} rows are not a multiple of the 'model' axis "
                         f"size {shards}; pad the table")
    return rows // shards


def target_ranks(
    user_vectors: jax.Array,
    item_table: jax.Array,
    targets: jax.Array,
    exclude: jax.Array | None = None,
    *,
    num_items: int | None = None,
    chunk_size: int = 65536,
) -> jax.Array:
    """1-based rank of each target among items 1..M by inner product, ties against the target.

    rank = 1 + #{i in 1..M, i != target, i not excluded : s_i >= s_target}. The item table
    is scored in chunks of `chunk_size` rows, with the target rows in the same product, so no
    [B, R] matrix larger than [B, chunk + B] exists. Excluded items (the user's history;
    0 = padding, duplicates allowed) are taken out of the count; the target itself is never
    excluded.

    Args:
      user_vectors: [B, D], or [B, K, D] (an item scores its best of the K).
      item_table: [R, D] (row 0 = padding; rows after M = pad rows, never counted).
      targets: int32 [B] in 1..M.
      exclude: int32 [B, H] item ids removed from the ranking, or None.
      num_items: M; None = R - 1.
      chunk_size: rows of the item table scored at once.

    Returns:
      ranks: int32 [B].
    """
    ahead = _count_ahead(
        user_vectors, item_table, targets, item_table[targets], exclude,
        first_id=0, num_items=_num_items(item_table, num_items), chunk_size=chunk_size,
    )
    return ahead + 1


def sharded_target_ranks(
    user_vectors: jax.Array,
    item_table: jax.Array,
    targets: jax.Array,
    exclude: jax.Array | None = None,
    *,
    mesh: jax.sharding.Mesh,
    num_items: int | None = None,
    chunk_size: int = 65536,
) -> jax.Array:
    """`target_ranks` (the same numbers) with the table's rows split over the 'model' axis.

    Each 'model' shard counts the items of its rows ahead of the target (scored in chunks of
    `chunk_size`), then the counts are summed over 'model'; users are split over 'data'. The
    target rows are gathered from the table before the split, and every shard scores them in
    its chunks' products, as `target_ranks` does.

    Args:
      user_vectors: [B, D] or [B, K, D]; B a multiple of the 'data' axis size.
      item_table: [R, D], R a multiple of the 'model' axis size (S).
      targets, exclude, num_items, chunk_size: as `target_ranks`.
      mesh: a mesh with axes 'data' and 'model'.

    Returns:
      ranks: int32 [B], sharded over 'data'.
    """
    num_items = _num_items(item_table, num_items)
    shard_rows = _model_shard_rows(item_table, mesh)

    def shard_ranks(user_vectors, table, targets, target_rows, exclude):
        ahead = _count_ahead(
            user_vectors, table, targets, target_rows, exclude,
            first_id=jax.lax.axis_index("model") * shard_rows, num_items=num_items,
            chunk_size=chunk_size,
        )
        return jax.lax.psum(ahead, "model") + 1

    return jax.shard_map(
        shard_ranks,
        mesh=mesh,
        in_specs=(P("data", None), P("model", None), P("data"), P("data", None), P("data", None)),
        out_specs=P("data"),
        check_vma=False,  # the chunk scan's carry starts unvarying
    )(user_vectors, item_table, targets, item_table[targets], exclude)


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
    num_items: int | None = None,
    chunk_size: int = 65536,
) -> jax.Array:
    """The k best items among 1..M by inner product, best first; ties: the lower id first.

    The item table is scored in chunks of `chunk_size` rows, merging each chunk's scores into
    a running top-k, so no [B, R] matrix larger than [B, chunk + k] exists. Excluded items
    (0 = padding, duplicates allowed) are never returned. When fewer than k items are left,
    the missing places hold 0.

    Args:
      user_vectors: [B, D], or [B, K, D] (an item scores its best of the K).
      item_table: [R, D] (row 0 = padding; rows after M = pad rows, never returned).
      exclude: int32 [B, H] item ids removed from the ranking, or None.
      k: how many items to return.
      num_items: M; None = R - 1.
      chunk_size: rows of the item table scored at once.

    Returns:
      items: int32 [B, k].
    """
    scores, ids = _local_top_k(
        user_vectors, item_table, exclude,
        first_id=0, num_items=_num_items(item_table, num_items), k=k, chunk_size=chunk_size,
    )
    return _ids_or_zero(scores, ids)


def sharded_top_items(
    user_vectors: jax.Array,
    item_table: jax.Array,
    exclude: jax.Array | None = None,
    *,
    mesh: jax.sharding.Mesh,
    k: int,
    num_items: int | None = None,
    chunk_size: int = 65536,
) -> jax.Array:
    """`top_items` (the same lists) with the table's rows split over the 'model' axis.

    Each 'model' shard takes the top-k of its rows (chunked, with global ids), the S lists are
    gathered over 'model' in shard order and a final top-k merges them: equal scores keep the
    lower id first, as in `top_items`. Users are split over 'data'.

    Args:
      user_vectors: [B, D] or [B, K, D]; B a multiple of the 'data' axis size.
      item_table: [R, D], R a multiple of the 'model' axis size (S).
      exclude, k, num_items, chunk_size: as `top_items`.
      mesh: a mesh with axes 'data' and 'model'.

    Returns:
      items: int32 [B, k], sharded over 'data'.
    """
    num_items = _num_items(item_table, num_items)
    shard_rows = _model_shard_rows(item_table, mesh)

    def shard_top(user_vectors, table, exclude):
        scores, ids = _local_top_k(
            user_vectors, table, exclude,
            first_id=jax.lax.axis_index("model") * shard_rows, num_items=num_items, k=k,
            chunk_size=chunk_size,
        )
        gather = functools.partial(jax.lax.all_gather, axis_name="model", axis=1, tiled=True)
        return _ids_or_zero(*_merge_top_k(gather(scores), gather(ids), k))  # from [B, S * k]

    return jax.shard_map(
        shard_top,
        mesh=mesh,
        in_specs=(P("data", None), P("model", None), P("data", None)),
        out_specs=P("data", None),
        check_vma=False,  # the chunk scan's carry starts unvarying
    )(user_vectors, item_table, exclude)


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
