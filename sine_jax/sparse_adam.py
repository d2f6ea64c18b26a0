"""Row-sparse ("lazy") Adam for an embedding table: a step reads and writes only the rows
it touches, so its cost does not grow with the catalogue.

The gradient is taken with respect to the gathered rows, and Adam's update for those rows
(optax.adam's formulas, bias correction by the number of steps taken) is scattered into the
table and its two moments, which the caller donates. Rows a step does not touch, and their
moments, are left exactly as they were; when every row is touched at every step this is
dense Adam.

Shapes: R table rows, D dim, U touched-row slots (static; unused slots hold R and are
ignored by every gather and scatter).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp


class LazyAdamState(NamedTuple):
    """Adam's moments for the table (sharded like it) and the number of updates taken."""

    count: jax.Array  # int32 []
    mu: jax.Array  # [R, D]
    nu: jax.Array  # [R, D]


def init(table: jax.Array) -> LazyAdamState:
    """Zero moments shaped like `table` [R, D]."""
    return LazyAdamState(jnp.zeros((), jnp.int32), jnp.zeros_like(table), jnp.zeros_like(table))


def touched_rows(ids: jax.Array, num_slots: int, num_rows: int) -> tuple[jax.Array, jax.Array]:
    """The distinct ids of `ids` and where each entry of `ids` is among them.

    Args:
      ids: int32 [...] row ids in 0..R-1 (at most `num_slots` distinct values).
      num_slots: U, the static number of slots.
      num_rows: R; unused slots are filled with R (out of range).

    Returns:
      unique: int32 [U] ascending distinct ids, then R's; inverse: int32 ids.shape with
      unique[inverse] == ids.
    """
    unique, inverse = jnp.unique(
        ids.ravel(), size=num_slots, fill_value=num_rows, return_inverse=True
    )
    return unique.astype(jnp.int32), inverse.reshape(ids.shape).astype(jnp.int32)


def gather_rows(table: jax.Array, unique: jax.Array) -> jax.Array:
    """table[unique] [U, D], zeros for unused slots."""
    return table.at[unique].get(mode="fill", fill_value=0)


def update(
    table: jax.Array,
    state: LazyAdamState,
    unique: jax.Array,
    row_grads: jax.Array,
    learning_rate: jax.Array | float,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> tuple[jax.Array, LazyAdamState]:
    """One Adam step on the rows `unique` of `table`, given their gradients (AdamW's
    decoupled weight decay, as `optax.adamw`, on those rows when `weight_decay` > 0).

    Args:
      table: [R, D] (donated by the caller's jit).
      state: the table's moments and step count.
      unique: int32 [U] from `touched_rows` (unused slots = R, dropped).
      row_grads: [U, D] gradient of the loss with respect to `gather_rows(table, unique)`.
      learning_rate: the step's learning rate (the schedule's value at `state.count`).

    Returns:
      (new table, new state).
    """
    count = state.count + 1
    mu = (1 - b1) * row_grads + b1 * gather_rows(state.mu, unique)  # optax's order
    nu = (1 - b2) * row_grads**2 + b2 * gather_rows(state.nu, unique)
    mu_hat = mu / (1 - b1**count).astype(mu.dtype)
    nu_hat = nu / (1 - b2**count).astype(nu.dtype)
    old = gather_rows(table, unique)
    rows = old - learning_rate * (mu_hat / (jnp.sqrt(nu_hat) + eps) + weight_decay * old)
    new_table = table.at[unique].set(rows.astype(table.dtype), mode="drop")
    new_mu = state.mu.at[unique].set(mu, mode="drop")
    new_nu = state.nu.at[unique].set(nu, mode="drop")
    return new_table, LazyAdamState(count, new_mu, new_nu)
