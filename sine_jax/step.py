"""The train step: the train state, the model split for jit, and one pure Adam step on the
loss of eqs 9-11, jitted over the device mesh.

Shapes: B global batch, n history length, D dim, M items, R item-table rows, S sampled
negatives, U item-table rows one step touches.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from ml_collections import config_dict

from sine_jax import losses, models, sharding, sparse_adam
from sine_jax.errors import SineError


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (the RNG is derived from the step)."""

    step: jax.Array  # int32 []
    params: nnx.State
    opt_state: optax.OptState  # Adam over every parameter, or all but the item table (sparse)
    item_moments: sparse_adam.LazyAdamState | None  # the item table's Adam (sparse updates)
    nonfinite_steps: jax.Array  # int32 [], steps whose loss or gradient was NaN/Inf
    first_nonfinite_step: jax.Array  # int32 [], the first such step (-1 = none)


@dataclasses.dataclass(frozen=True)
class SplitModel:
    """The model of a config as jitted functions see it: its graph and fixed arrays (static,
    closed over), the shapes and shardings of its parameters (what a restore reads into), and
    how to build it for real (`build()`, seeded by train.seed)."""

    graphdef: nnx.GraphDef
    rest: nnx.State  # non-parameter variables (`layers.Constant`; none for SINE)
    abstract_params: Any  # ShapeDtypeStructs with their shardings
    build: Callable[[], nnx.Module]
    mesh: jax.sharding.Mesh
    num_items: int  # M
    table_rows: int  # R >= M + 1: the item table with padding rows (`padded_table_rows`)
    num_prototypes: int  # L of a model with interests (`summarize_interests`); else 0

    def merge(self, params: nnx.State) -> nnx.Module:
        """The module with `params` (e.g. restored from a checkpoint)."""
        return nnx.merge(self.graphdef, params, self.rest)

    def queries_and_table(self, params: nnx.State, history: jax.Array):
        """(queries [B, D'] or [B, K, D'], the item vectors they score [R, D']) for histories
        int32 [B, n]: what the evaluation ranks with (`evaluate`; K queries rank an item by
        its best score). D' = D but for models with `item_vectors` (`models.item_vectors`)."""
        model = self.merge(params)
        return model.encode(history), models.item_vectors(model, model.item_embedding[...])

    def interest_summary(self, params: nnx.State, history: jax.Array):
        """`sine.InterestSummary` of histories int32 [B, n] (models with interests only)."""
        return self.merge(params).summarize_interests(history)


@dataclasses.dataclass(frozen=True)
class StepContext:
    """What the train step closes over (static, not traced)."""

    model: SplitModel
    tx: optax.GradientTransformation  # Adam(W) with the schedule, without clipping
    schedule: optax.Schedule
    weight_decay: float  # AdamW's decoupled weight decay (0: plain Adam)
    state_sharding: Any
    abstract_state: Any  # ShapeDtypeStructs of the TrainState with their shardings
    sparse: bool  # row-sparse Adam for the item table


_TABLE = nnx.PathContains("item_embedding")
# Folded into the step's base key for the dropout stream (the negatives use the base key).
DROPOUT_STREAM = 2**31 - 1


def learning_rate_schedule(train_config, total_steps: int) -> optax.Schedule:
    """The learning rate by step t: linear from 0 over w = train.warmup_steps, then constant,
    or cosine lr (1 + cos(pi (t - w) / (T - w))) / 2 to 0 at the last step T; the cosine
    warms up over at least one step (w = max(w, 1): step 0 has rate 0)."""
    lr = train_config.learning_rate
    warmup = min(train_config.warmup_steps, total_steps)
    if train_config.lr_decay == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, lr, max(warmup, 1), max(total_steps, warmup + 1), end_value=0.0
        )
    if warmup:
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup]
        )
    return optax.constant_schedule(lr)


def cov_weight(config: config_dict.ConfigDict) -> float:
    """lambda of eq 11: the config's value, else 0.5 (default and paper presets) or 0
    (official preset)."""
    if config.loss.cov_weight is not None:
        return float(config.loss.cov_weight)
    return 0.0 if config.model.preset == "official" else 0.5


def touched_rows_per_step(config: config_dict.ConfigDict) -> int:
    """Item-table rows one step can touch: padding, B x n history, B targets, S negatives."""
    batch = config.train.batch_size
    negatives = config.loss.negatives_per_example * batch
    return 1 + batch * config.model.max_seq_len + batch + negatives


# Row-sparse Adam is the default when a step touches at most 1/8 of the item table: Taobao
# (4.2M items) and ULarge, not MovieLens (3,706 items, where a batch of 128 touches 3,329
# rows and the paper's dense Adam is kept).
SPARSE_DEFAULT_RATIO = 8


def uses_sparse_updates(config: config_dict.ConfigDict, num_items: int) -> bool:
    """train.sparse_item_updates, or by default: sampled softmax over a catalogue at least
    SPARSE_DEFAULT_RATIO times larger than what one step can touch."""
    sampled = (
        config.loss.name == "sampled_softmax"
        and config.loss.negatives_per_example * config.train.batch_size < num_items
    )
    if config.train.sparse_item_updates is None:
        return (
            sampled and models.dense_table_reason(config.model) is None
            and num_items + 1 > SPARSE_DEFAULT_RATIO * touched_rows_per_step(config)
        )
    if config.train.sparse_item_updates and not sampled:
        raise SineError(
            f"train.sparse_item_updates=True needs sampled negatives: S = "
            f"{config.loss.negatives_per_example} x {config.train.batch_size} is not below the "
            f"{num_items} items, so the full softmax touches every row"
        )
    return bool(config.train.sparse_item_updates)


def split_model(
    config: config_dict.ConfigDict, num_items: int, mesh: jax.sharding.Mesh,
    item_categories: np.ndarray | None = None,
) -> SplitModel:
    """Validates `config.model` and splits the model it names without allocating its
    parameters. `item_categories` [M + 1] (-1 = none) is what SINE-cate's prototype pool is
    made of.

    Raises:
        ConfigError: a bad `model.*` field.
    """
    table_rows = sharding.padded_table_rows(num_items, mesh.shape["model"])
    seed = config.train.seed

    def build():
        return models.build_model(
            config.model, num_items, nnx.Rngs(seed), table_rows=table_rows,
            item_categories=item_categories,
        )

    abstract_model = nnx.eval_shape(build)  # validates the model config, allocates nothing
    graphdef, abstract_params, _ = nnx.split(abstract_model, nnx.Param, ...)
    # The model's fixed arrays (`layers.Constant`), made for real; XLA drops the parameters.
    rest = jax.jit(lambda: nnx.split(build(), nnx.Param, ...)[2])()
    params_sharding = sharding.state_sharding(abstract_params, mesh, config.mesh.shard_prototypes)
    num_prototypes = (
        abstract_model.num_prototypes if hasattr(abstract_model, "summarize_interests") else 0
    )
    return SplitModel(
        graphdef, rest, sharding.with_shardings(abstract_params, params_sharding), build, mesh,
        num_items, table_rows, num_prototypes,
    )


def create_train_state(
    config: config_dict.ConfigDict, model: SplitModel, total_steps: int
) -> tuple[StepContext, TrainState]:
    """Builds the parameters and the optimizer state, each array created directly with its
    sharding (a row-split table is never whole on one device)."""
    schedule = learning_rate_schedule(config.train, total_steps)
    weight_decay = float(config.train.weight_decay)
    tx = optax.adamw(schedule, weight_decay=weight_decay) if weight_decay else optax.adam(schedule)
    sparse = uses_sparse_updates(config, model.num_items)

    def init():
        params = nnx.state(model.build(), nnx.Param)
        table, dense = nnx.split_state(params, _TABLE, ...)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(dense if sparse else params),
            item_moments=sparse_adam.init(table["item_embedding"][...]) if sparse else None,
            nonfinite_steps=jnp.zeros((), jnp.int32),
            first_nonfinite_step=jnp.full((), -1, jnp.int32),
        )

    abstract_state = jax.eval_shape(init)
    state_sharding = sharding.state_sharding(
        abstract_state, model.mesh, config.mesh.shard_prototypes
    )
    state = jax.jit(init, out_shardings=state_sharding)()
    abstract_state = sharding.with_shardings(abstract_state, state_sharding)
    context = StepContext(
        model, tx, schedule, weight_decay, state_sharding, abstract_state, sparse
    )
    return context, state


def _with_table(dense: nnx.State, table: jax.Array) -> nnx.State:
    """`dense` (every parameter but the item table) with `table` as the item table."""
    return nnx.merge_state(dense, nnx.State({"item_embedding": nnx.Param(table)}))


def _cast(tree, dtype):
    """Floating leaves of `tree` as `dtype` (bf16 compute over f32 master weights)."""
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


def train_step(
    state: TrainState, batch: dict[str, jax.Array], *, context: StepContext, loss_config,
    lam: float, base_rng: jax.Array, clip_norm: float = 0.0, compute_dtype=jnp.float32,
    skip_nonfinite: bool = False,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One Adam(W) step on L = L_like + lambda L_c (eqs 9-11). Pure; no host syncs.

    With `context.sparse` the gradient is taken with respect to the item-table rows the batch
    touches (history, targets, negatives) and only those rows and their moments are updated
    (`sparse_adam`); otherwise every parameter gets a dense Adam step. Gradients are clipped
    to a global norm `clip_norm` (0 = off) over all of them. A step whose loss or gradient is
    not finite is counted in the state; with `skip_nonfinite` its update is dropped. The
    model's dropout (if any) draws from a key folded from `base_rng` and the step, apart from
    the negatives' key.

    Args:
      state: the train state.
      batch: history int32 [B, n], target int32 [B].

    Returns:
      (new state, scalar metrics: loss, likelihood, cov, grad_norm).
    """
    history, target = batch["history"], batch["target"]
    num_items, batch_size = context.model.num_items, target.shape[0]
    num_samples = loss_config.negatives_per_example * batch_size
    full = loss_config.name == "full_softmax" or num_samples >= num_items
    sampled = None
    if not full:
        rng = jax.random.fold_in(base_rng, state.step)
        sampled = losses.log_uniform_sample(rng, num_samples, num_items)  # [S]
    dropout_rng = jax.random.fold_in(jax.random.fold_in(base_rng, DROPOUT_STREAM), state.step)
    table_state, dense = nnx.split_state(state.params, _TABLE, ...)
    table = table_state["item_embedding"][...]  # [R, D]
    if context.sparse:
        ids = jnp.concatenate([jnp.zeros(1, jnp.int32), history.ravel(), target, sampled])
        unique, inverse = sparse_adam.touched_rows(ids, ids.size, context.model.table_rows)
        rows = sparse_adam.gather_rows(table, unique)  # [U, D], row 0 = padding
        history_idx = inverse[1 : 1 + history.size].reshape(history.shape)
        target_idx = inverse[1 + history.size : 1 + history.size + batch_size]
        sampled_idx = inverse[1 + history.size + batch_size :]
    else:
        rows, history_idx, target_idx, sampled_idx = table, history, target, sampled

    def loss_fn(dense, rows):
        params = _with_table(_cast(dense, compute_dtype), rows.astype(compute_dtype))
        model = context.model.merge(params)
        rows_c = model.item_embedding[...]
        user_vectors = models.training_query(  # [B, D']; multi-interest: read against the target
            model, model.encode(history_idx, dropout_rng), rows_c[target_idx], history_idx
        )
        scored = functools.partial(models.item_vectors, model)  # rows -> what queries score
        if full:
            like = losses.full_softmax_loss(user_vectors, scored(rows_c), target, num_items)
        else:
            like = losses.sampled_softmax_loss(
                user_vectors, scored(rows_c[target_idx]), scored(rows_c[sampled_idx]), target,
                sampled, num_items,
                logq_correction=loss_config.logq_correction,
                remove_accidental_hits=loss_config.remove_accidental_hits,
            )
        like = jnp.mean(like.astype(jnp.float32))
        cov = (  # eqs 10-11 on a learned prototype pool; models without one have L_c = 0
            losses.covariance_regularizer(dense["prototypes"][...])
            if "prototypes" in dense else jnp.zeros((), jnp.float32)
        )
        return like + lam * cov, (like, cov)

    (loss, (like, cov)), (dense_grads, row_grads) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True
    )(dense, rows)
    grad_norm = optax.tree.norm((dense_grads, row_grads))
    if clip_norm > 0:  # as optax.clip_by_global_norm, over the dense and the row gradients
        clip = lambda g: jnp.where(grad_norm < clip_norm, g, g / grad_norm * clip_norm)  # noqa: E731
        dense_grads, row_grads = jax.tree.map(clip, (dense_grads, row_grads))
    if context.sparse:
        updates, opt_state = context.tx.update(dense_grads, state.opt_state, dense)
        new_table, item_moments = sparse_adam.update(
            table, state.item_moments, unique, row_grads,
            context.schedule(state.item_moments.count), weight_decay=context.weight_decay,
        )
        params = _with_table(optax.apply_updates(dense, updates), new_table)
    else:
        grads = _with_table(dense_grads, row_grads)
        updates, opt_state = context.tx.update(grads, state.opt_state, state.params)
        params, item_moments = optax.apply_updates(state.params, updates), None
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if skip_nonfinite:
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        params = jax.tree.map(keep, params, state.params)
        opt_state = jax.tree.map(keep, opt_state, state.opt_state)
        item_moments = jax.tree.map(keep, item_moments, state.item_moments)
    first_bad = jnp.where(
        (state.first_nonfinite_step < 0) & ~finite, state.step + 1, state.first_nonfinite_step
    )
    new_state = TrainState(
        step=state.step + 1,
        params=params,
        opt_state=opt_state,
        item_moments=item_moments,
        nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32),
        first_nonfinite_step=first_bad,
    )
    metrics = {"loss": loss, "likelihood": like, "cov": cov, "grad_norm": grad_norm}
    return new_state, metrics


def make_step_fn(context: StepContext, config: config_dict.ConfigDict):
    """The jitted, state-donating train step with batch sharding over 'data'."""
    mesh = context.model.mesh
    step = functools.partial(
        train_step,
        context=context,
        loss_config=config.loss,
        lam=cov_weight(config),
        base_rng=jax.random.key(config.train.seed + 1),
        clip_norm=float(config.train.grad_clip_norm),
        compute_dtype=jnp.dtype(config.train.compute_dtype),
        skip_nonfinite=config.train.on_nonfinite == "skip",
    )
    return jax.jit(
        step,
        in_shardings=(context.state_sharding, sharding.batch_sharding(mesh)),
        out_shardings=(context.state_sharding, sharding.replicated(mesh)),
        donate_argnums=(0,),
    )
