"""Full-ranking evaluation (DESIGN.md section 5): encode users on device, rank all items.

Shapes: U users evaluated, B users per batch, n history length, H exclusion-list length,
D dim, M items.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sine_jax import metrics

EncodeFn = Callable[[object, jax.Array], tuple[jax.Array, jax.Array]]


def make_rank_fn(
    encode: EncodeFn, mesh: jax.sharding.Mesh, *, mask_history: bool, chunk_size: int
) -> Callable:
    """Jitted (params, history [B, n], target [B], exclude [B, H]) -> ranks int32 [B].

    `encode(params, history)` returns (user vectors [B, D], item table [M + 1, D]).
    """
    batch_sharding = NamedSharding(mesh, P("data"))

    def rank_fn(params, history, target, exclude):
        user_vectors, item_table = encode(params, history)
        return metrics.target_ranks(
            user_vectors,
            item_table,
            target,
            exclude if mask_history else None,
            chunk_size=chunk_size,
        )

    return jax.jit(rank_fn, out_shardings=batch_sharding)


def compute_ranks(
    rank_fn: Callable,
    params,
    arrays: dict[str, np.ndarray],
    *,
    batch_size: int,
    mesh: jax.sharding.Mesh,
) -> np.ndarray:
    """Ranks of every user's target, in batches of `batch_size` (the last one padded).

    Args:
      arrays: history int32 [U, n], target int32 [U], exclude int32 [U, H].

    Returns:
      ranks: int [U].
    """
    batch_sharding = NamedSharding(mesh, P("data"))
    num_users = len(arrays["target"])
    ranks = []
    for start in range(0, num_users, batch_size):
        batch = {k: v[start : start + batch_size] for k, v in arrays.items()}
        size = len(batch["target"])
        if size < batch_size:  # static shapes: pad with a dummy user, dropped below
            pad = batch_size - size
            batch = {
                "history": np.pad(batch["history"], ((0, pad), (0, 0))),
                "target": np.pad(batch["target"], (0, pad), constant_values=1),
                "exclude": np.pad(batch["exclude"], ((0, pad), (0, 0))),
            }
        batch = {k: jax.device_put(v, batch_sharding) for k, v in batch.items()}
        out = rank_fn(params, batch["history"], batch["target"], batch["exclude"])
        ranks.append((out, size))
    return np.concatenate([np.asarray(r)[:size] for r, size in ranks])


def evaluate(
    rank_fn: Callable,
    params,
    arrays: dict[str, np.ndarray],
    *,
    batch_size: int,
    mesh: jax.sharding.Mesh,
    ks: Sequence[int],
) -> dict[str, float]:
    """HR@N and NDCG@N over all users of `arrays` (see `compute_ranks`)."""
    ranks = compute_ranks(rank_fn, params, arrays, batch_size=batch_size, mesh=mesh)
    return metrics.rank_metrics(ranks, ks)


def popularity_metrics(
    item_counts: np.ndarray,
    arrays: dict[str, np.ndarray],
    *,
    mask_history: bool,
    ks: Sequence[int],
    batch_size: int = 1024,
) -> dict[str, float]:
    """The popularity ranking (score = training count) evaluated like a model: the floor."""
    table = jnp.asarray(item_counts, jnp.float32)[:, None]  # [M + 1, 1]
    ranks = []
    for start in range(0, len(arrays["target"]), batch_size):
        target = jnp.asarray(arrays["target"][start : start + batch_size])
        exclude = jnp.asarray(arrays["exclude"][start : start + batch_size])
        ones = jnp.ones((len(target), 1), jnp.float32)
        ranks.append(
            np.asarray(
                metrics.target_ranks(ones, table, target, exclude if mask_history else None)
            )
        )
    return metrics.rank_metrics(np.concatenate(ranks), ks)
