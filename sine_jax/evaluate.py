"""Full-ranking evaluation: encode users on device, rank all items; and how many interests
the users of a multi-interest model really have.

Shapes: U users evaluated, B users per batch, n history length, H exclusion-list length,
D dim, M items.
"""

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sine_jax import metrics, sharding

# (params, history [B, n]) -> (queries [B, D] or [B, K, D], the item vectors they score
# [R, D]: the item table, or a model's `item_vectors` of it, `models.item_vectors`).
QueriesAndTableFn = Callable[[object, jax.Array], tuple[jax.Array, jax.Array]]


def _table_sharded(mesh: jax.sharding.Mesh) -> bool:
    """Whether the item table is split row-wise over a 'model' axis of size > 1."""
    return mesh.shape.get("model", 1) > 1


def make_rank_fn(
    queries_and_table: QueriesAndTableFn,
    mesh: jax.sharding.Mesh,
    *,
    mask_history: bool,
    chunk_size: int,
    num_items: int,
) -> Callable:
    """Jitted (params, history [B, n], target [B], exclude [B, H]) -> ranks int32 [B].

    `queries_and_table(params, history)` returns (user vectors [B, D], item table [R, D]);
    rows after `num_items` (M) are pad rows, never ranked. On a mesh with a 'model' axis of
    size > 1 the table's rows are split over it (`metrics.sharded_target_ranks`); the ranks
    are the same.
    """
    ranks = (
        functools.partial(metrics.sharded_target_ranks, mesh=mesh)
        if _table_sharded(mesh) else metrics.target_ranks
    )

    def rank_fn(params, history, target, exclude):
        user_vectors, item_table = queries_and_table(params, history)
        return ranks(
            user_vectors, item_table, target, exclude if mask_history else None,
            num_items=num_items, chunk_size=chunk_size,
        )

    # Replicated outputs: every process can read them (multi-host runs).
    return jax.jit(rank_fn, out_shardings=sharding.replicated(mesh))


def make_top_fn(
    queries_and_table: QueriesAndTableFn,
    mesh: jax.sharding.Mesh,
    *,
    k: int,
    mask_history: bool,
    chunk_size: int,
    num_items: int,
) -> Callable:
    """Jitted (params, history [B, n], exclude [B, H]) -> the k best items int32 [B, k].

    `queries_and_table` and `num_items` as `make_rank_fn`; on a mesh with a 'model' axis of
    size > 1 the table's rows are split over it (`metrics.sharded_top_items`); the lists are
    the same.
    """
    top = (
        functools.partial(metrics.sharded_top_items, mesh=mesh)
        if _table_sharded(mesh) else metrics.top_items
    )

    def top_fn(params, history, exclude):
        user_vectors, item_table = queries_and_table(params, history)
        return top(
            user_vectors, item_table, exclude if mask_history else None,
            k=k, num_items=num_items, chunk_size=chunk_size,
        )

    return jax.jit(top_fn, out_shardings=sharding.replicated(mesh))


def _batched(
    fn: Callable, params, arrays: dict[str, np.ndarray], names: Sequence[str], *,
    batch_size: int, mesh: jax.sharding.Mesh,
):
    """fn(params, *arrays[names]) over all users in batches of `batch_size`; the outputs (an
    array or a pytree of arrays, each with a leading user axis) concatenated over users.

    The last batch is padded (zeros; a padded `target` is 1) so every call has the same
    shapes (one compile); padded rows are dropped from the result. In a multi-process run
    each process sends only its rows of each batch (`sharding.local_rows`), and every
    process reads the whole (replicated) output.
    """
    first, last = sharding.local_rows(mesh, batch_size)
    num_users = len(arrays[names[0]])
    outputs = []
    for start in range(0, num_users, batch_size):
        size = min(batch_size, num_users - start)
        local = {}
        for name in names:
            block = arrays[name][start + first : min(start + last, start + size)]
            pad = [(0, last - first - len(block))] + [(0, 0)] * (block.ndim - 1)
            local[name] = np.pad(block, pad, constant_values=1 if name == "target" else 0)
        inputs = sharding.global_batch(local, mesh, batch_size)
        outputs.append((fn(params, *(inputs[n] for n in names)), size))  # read back below
    parts = [jax.tree.map(lambda a, size=size: np.asarray(a)[:size], out) for out, size in outputs]
    return jax.tree.map(lambda *blocks: np.concatenate(blocks), *parts)


def compute_ranks(
    rank_fn: Callable, params, arrays: dict[str, np.ndarray], *, batch_size: int,
    mesh: jax.sharding.Mesh,
) -> np.ndarray:
    """Ranks int [U] of every user's target (leave-one-out arrays: history, target, exclude)."""
    return _batched(
        rank_fn, params, arrays, ("history", "target", "exclude"),
        batch_size=batch_size, mesh=mesh,
    )


def evaluate(
    eval_fn: Callable,
    params,
    arrays: dict[str, np.ndarray],
    *,
    batch_size: int,
    mesh: jax.sharding.Mesh,
    ks: Sequence[int],
) -> dict[str, float]:
    """Metrics over all users of `arrays`.

    Leave-one-out arrays (with `target`) take a `make_rank_fn` function and give HR@N and
    NDCG@N; held-out-users arrays (with `targets`) take a `make_top_fn` function and give
    Recall@N, NDCG@N and HitRate@N.
    """
    if "target" in arrays:
        ranks = compute_ranks(eval_fn, params, arrays, batch_size=batch_size, mesh=mesh)
        return metrics.rank_metrics(ranks, ks)
    top = _batched(
        eval_fn, params, arrays, ("history", "exclude"), batch_size=batch_size, mesh=mesh
    )
    return metrics.multi_target_metrics(top, arrays["targets"], ks)


def make_interest_fn(interest_summary: Callable, mesh: jax.sharding.Mesh) -> Callable:
    """Jitted (params, history [B, n]) -> `sine.InterestSummary`, replicated outputs."""
    return jax.jit(interest_summary, out_shardings=sharding.replicated(mesh))


def interest_diagnostics(
    interest_fn: Callable, params, arrays: dict[str, np.ndarray], *, batch_size: int,
    mesh: jax.sharding.Mesh, num_prototypes: int,
) -> dict[str, float]:
    """How many interests the users of `arrays` really have (results.json's "interests").

    Returns:
        effective_k: the mean over users of exp(entropy of e_k), in [1, K] (absent for
            models without interest weights e);
        history_interests: the mean number of distinct interests the users' history items
            are assigned to (argmax_k P(k|t)), in [1, K];
        prototypes_used: the fraction of the L prototypes that some user activates.
    """
    summary = _batched(
        interest_fn, params, arrays, ("history",), batch_size=batch_size, mesh=mesh
    )
    out = {
        "history_interests": float(summary.history_interests.mean()),
        "prototypes_used": len(np.unique(summary.prototype_ids)) / num_prototypes,
    }
    if summary.effective_k is not None:
        out["effective_k"] = float(summary.effective_k.mean())
    return out


def popularity_queries_and_table(
    counts: jax.Array, history: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The popularity ranking as a `QueriesAndTableFn` (params = the training counts [R] as float):
    every user's query is 1 [B, 1] against the one-column table of counts [R, 1], so an item
    scores its count (the `pop` floor of every table; ties count against the target)."""
    ones = jnp.ones((history.shape[0], 1), counts.dtype)
    return ones, counts[:, None]
