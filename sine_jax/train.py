"""The training loop: state, pure train step, periodic validation, checkpoints, results.

Shapes: B global batch, n history length, D dim, M items.
"""

import contextlib
import dataclasses
import functools
import json
import math
import os
import subprocess
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_dict

from sine_jax import (
    checkpointing,
    config_checks,
    evaluate,
    losses,
    models,
    run_config,
    sparse_adam,
)
from sine_jax.data import dataset as dataset_lib
from sine_jax.data import pipeline
from sine_jax.errors import SineError
from sine_jax.metric_writer import MetricWriter
from sine_jax.models import layers


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
class Setup:
    """What the step and evaluation functions close over (static, not traced)."""

    graphdef: nnx.GraphDef
    rest: nnx.State  # non-parameter variables (none for SINE; kept for completeness)
    tx: optax.GradientTransformation  # Adam with the schedule, without clipping
    schedule: optax.Schedule
    mesh: jax.sharding.Mesh
    state_sharding: Any
    abstract_state: Any
    num_items: int  # M
    table_rows: int  # R >= M + 1: the item table with padding rows (`padded_table_rows`)
    sparse: bool  # row-sparse Adam for the item table


_TABLE = nnx.PathContains("item_embedding")


def make_mesh(
    config: config_dict.ConfigDict, devices: list[jax.Device] | None = None
) -> jax.sharding.Mesh:
    """The ('data', 'model') mesh of `mesh.data` x `mesh.model` devices."""
    devices = jax.devices() if devices is None else devices
    data, model = config_checks.mesh_shape(config, len(devices))
    return jax.make_mesh(
        (data, model), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2,
        devices=devices[: data * model],
    )


def learning_rate_schedule(train_config, total_steps: int) -> optax.Schedule:
    """The learning rate by step: constant or cosine to 0, after an optional linear warm-up."""
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


# The item table's rows are padded to a multiple of this (and of the 'model' axis size), so
# that checkpoints restore onto meshes of other shapes (1, 2, 4, ... 128 'model' devices).
TABLE_ROW_MULTIPLE = 128


def padded_table_rows(num_items: int, model_size: int) -> int:
    """R: M + 1 rounded up to a multiple of lcm(TABLE_ROW_MULTIPLE, model_size)."""
    multiple = math.lcm(TABLE_ROW_MULTIPLE, model_size)
    return -(-(num_items + 1) // multiple) * multiple


def _state_sharding(abstract_state, mesh: jax.sharding.Mesh, shard_prototypes: bool):
    """Row-split over 'model': the item table, its moments (and the prototypes when asked);
    everything else replicated."""

    def sharding(path, leaf):
        name = jax.tree_util.keystr(path)
        rows = "item_embedding" in name or "item_moments" in name
        rows |= shard_prototypes and "prototypes" in name
        return NamedSharding(mesh, P("model", None) if rows and leaf.ndim == 2 else P())

    return jax.tree_util.tree_map_with_path(sharding, abstract_state)


def create_train_state(
    config: config_dict.ConfigDict, num_items: int, mesh: jax.sharding.Mesh, total_steps: int,
    item_categories: np.ndarray | None = None,
) -> tuple[Setup, TrainState]:
    """Builds the model and optimizer state, each array created directly with its sharding
    (a row-split table is never whole on one device). `item_categories` [M + 1] (-1 = none)
    is what SINE-cate's prototype pool is made of."""
    schedule = learning_rate_schedule(config.train, total_steps)
    tx = optax.adam(schedule)
    sparse = uses_sparse_updates(config, num_items)
    table_rows = padded_table_rows(num_items, mesh.shape["model"])
    seed = config.train.seed

    def build():
        return models.build_model(
            config.model, num_items, nnx.Rngs(seed), table_rows=table_rows,
            item_categories=item_categories,
        )

    abstract_model = nnx.eval_shape(build)  # validates the model config, allocates nothing
    graphdef, _, _ = nnx.split(abstract_model, nnx.Param, ...)
    # The model's fixed arrays (`layers.Constant`), made for real; XLA drops the parameters.
    rest = jax.jit(lambda: nnx.split(build(), nnx.Param, ...)[2])()

    def init():
        params = nnx.state(build(), nnx.Param)
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
    state_sharding = _state_sharding(abstract_state, mesh, config.mesh.shard_prototypes)
    state = jax.jit(init, out_shardings=state_sharding)()
    abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        abstract_state,
        state_sharding,
    )
    setup = Setup(
        graphdef, rest, tx, schedule, mesh, state_sharding, abstract_state, num_items,
        table_rows, sparse,
    )
    return setup, state


def encode(setup: Setup, params: nnx.State, history: jax.Array):
    """(queries [B, D] or [B, K, D], item table [R, D]) for histories int32 [B, n]
    (`sine_jax.models`: K queries rank an item by its best score)."""
    model = nnx.merge(setup.graphdef, params, setup.rest)
    return model.encode(history), model.item_embedding[...]


def _with_table(dense: nnx.State, table: jax.Array) -> nnx.State:
    """`dense` (every parameter but the item table) with `table` as the item table."""
    return nnx.merge_state(dense, nnx.State({"item_embedding": nnx.Param(table)}))


def _cast(tree, dtype):
    """Floating leaves of `tree` as `dtype` (bf16 compute over f32 master weights)."""
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


def train_step(
    state: TrainState, batch: dict[str, jax.Array], *, setup: Setup, loss_config, lam: float,
    base_rng: jax.Array, clip_norm: float = 0.0, compute_dtype=jnp.float32,
    skip_nonfinite: bool = False,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One Adam step on L = L_like + lambda L_c (eqs 9-11). Pure; no host syncs.

    With `setup.sparse` the gradient is taken with respect to the item-table rows the batch
    touches (history, targets, negatives) and only those rows and their moments are updated
    (`sparse_adam`); otherwise every parameter gets a dense Adam step. Gradients are clipped
    to a global norm `clip_norm` (0 = off) over all of them. A step whose loss or gradient is
    not finite is counted in the state; with `skip_nonfinite` its update is dropped.

    Args:
      state: the train state.
      batch: history int32 [B, n], target int32 [B].

    Returns:
      (new state, scalar metrics: loss, likelihood, cov, grad_norm).
    """
    history, target = batch["history"], batch["target"]
    num_items, batch_size = setup.num_items, target.shape[0]
    num_samples = loss_config.negatives_per_example * batch_size
    full = loss_config.name == "full_softmax" or num_samples >= num_items
    sampled = None
    if not full:
        rng = jax.random.fold_in(base_rng, state.step)
        sampled = losses.log_uniform_sample(rng, num_samples, num_items)  # [S]
    table_state, dense = nnx.split_state(state.params, _TABLE, ...)
    table = table_state["item_embedding"][...]  # [R, D]
    if setup.sparse:
        ids = jnp.concatenate([jnp.zeros(1, jnp.int32), history.ravel(), target, sampled])
        unique, inverse = sparse_adam.touched_rows(ids, ids.size, setup.table_rows)
        rows = sparse_adam.gather_rows(table, unique)  # [U, D], row 0 = padding
        history_idx = inverse[1 : 1 + history.size].reshape(history.shape)
        target_idx = inverse[1 + history.size : 1 + history.size + batch_size]
        sampled_idx = inverse[1 + history.size + batch_size :]
    else:
        rows, history_idx, target_idx, sampled_idx = table, history, target, sampled

    def loss_fn(dense, rows):
        params = _with_table(_cast(dense, compute_dtype), rows.astype(compute_dtype))
        model = nnx.merge(setup.graphdef, params, setup.rest)
        user_vectors = model.encode(history_idx)  # [B, D] or [B, K, D]
        rows_c = model.item_embedding[...]
        if user_vectors.ndim == 3:  # multi-interest: the interest nearest each target
            user_vectors = layers.label_aware_readout(user_vectors, rows_c[target_idx])
        if full:
            like = losses.full_softmax_loss(user_vectors, rows_c, target, num_items)
        else:
            like = losses.sampled_softmax_loss(
                user_vectors, rows_c[target_idx], rows_c[sampled_idx], target, sampled,
                num_items,
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
    if setup.sparse:
        updates, opt_state = setup.tx.update(dense_grads, state.opt_state, dense)
        new_table, item_moments = sparse_adam.update(
            table, state.item_moments, unique, row_grads,
            setup.schedule(state.item_moments.count),
        )
        params = _with_table(optax.apply_updates(dense, updates), new_table)
    else:
        grads = _with_table(dense_grads, row_grads)
        updates, opt_state = setup.tx.update(grads, state.opt_state, state.params)
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


def make_step_fn(setup: Setup, config: config_dict.ConfigDict):
    """The jitted, state-donating train step with batch sharding over 'data'."""
    batch_sharding = NamedSharding(setup.mesh, P("data"))
    replicated = NamedSharding(setup.mesh, P())
    step = functools.partial(
        train_step,
        setup=setup,
        loss_config=config.loss,
        lam=cov_weight(config),
        base_rng=jax.random.key(config.train.seed + 1),
        clip_norm=float(config.train.grad_clip_norm),
        compute_dtype=jnp.dtype(config.train.compute_dtype),
        skip_nonfinite=config.train.on_nonfinite == "skip",
    )
    return jax.jit(
        step,
        in_shardings=(setup.state_sharding, batch_sharding),
        out_shardings=(setup.state_sharding, replicated),
        donate_argnums=(0,),
    )


def environment() -> dict[str, Any]:
    """Versions, git commit and devices, for results.json."""
    import grain
    import orbax.checkpoint

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "orbax_checkpoint": orbax.checkpoint.__version__,
        "grain": getattr(grain, "__version__", "unknown"),
        "numpy": np.__version__,
        "git_commit": commit,
        "devices": [str(d) for d in jax.devices()],
    }


class _Trainer:
    """Owns one run: data, state, checkpoints, writer. `run()` returns the results dict."""

    def __init__(self, config: config_dict.ConfigDict, workdir: str):
        config_checks.validate(config)
        self.config = config
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.mesh = make_mesh(config)
        self.data, self.valid_arrays, self.test_arrays = _load_data(config, workdir)
        n = config.model.max_seq_len
        batch_size = config.train.batch_size
        self.steps_per_epoch = pipeline.num_train_examples(self.data) // batch_size
        if self.steps_per_epoch == 0:
            raise SineError(
                f"train.batch_size={batch_size} is larger than the "
                f"{pipeline.num_train_examples(self.data)} training examples"
            )
        self.total_steps = config.train.num_epochs * self.steps_per_epoch
        self.eval_every = config.eval.every_steps or self.steps_per_epoch
        self.setup, self.state = create_train_state(
            config, self.data.num_items, self.mesh, self.total_steps, self.data.item_categories
        )
        train_dataset = pipeline.make_train_dataset(
            self.data, max_seq_len=n, batch_size=batch_size, seed=config.train.seed
        )
        self.make_iterator = lambda: iter(train_dataset)
        self.train_iter = self.make_iterator()
        self.ckpt = checkpointing.Checkpointer(
            os.path.join(workdir, "checkpoints"), keep=config.checkpoint.keep
        )
        self.progress = checkpointing.Progress()
        self._reported_nonfinite = 0
        self.eval_fn = _make_eval_fn(
            config, functools.partial(encode, self.setup), self.mesh, self.data.num_items
        )

    def validate(self, params) -> dict[str, float]:
        return evaluate.evaluate(
            self.eval_fn, params, self.valid_arrays,
            batch_size=self.config.eval.batch_size, mesh=self.mesh, ks=self.config.eval.ks,
        )

    def _record_eval(self, step: int, metrics: dict[str, float], writer: MetricWriter) -> bool:
        """Updates early stopping; returns True when patience is exhausted."""
        value = metrics[self.config.eval.metric]
        writer.write(step, {f"valid/{k}": v for k, v in metrics.items()})
        logging.info(
            "step %d: validation %s",
            step, " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())),
        )
        if value > self.progress.best_metric:
            self.progress = checkpointing.Progress(value, step, 0)
        else:
            self.progress.evals_without_improvement += 1
        patience = self.config.train.patience
        return bool(patience) and self.progress.evals_without_improvement >= patience

    def run(self) -> dict[str, Any]:
        start_time = time.time()
        step, stopped = self._restore_latest()
        writer = MetricWriter(self.workdir)
        try:
            step = self._train(step, stopped, writer)
            self.ckpt.wait()
            best = self.ckpt.restore_state(self.progress.best_step, self.setup.abstract_state)
            results = self._final_results(best.params, start_time)
            writer.write(step, {f"test/{k}": v for k, v in results["test"].items()})
        finally:  # an interrupted run still completes the checkpoint saves in flight
            writer.close()
            self.ckpt.wait()
            self.ckpt.close()
        return results

    def _restore_latest(self) -> tuple[int, bool]:
        """Restores the newest usable checkpoint if any; returns (step, early-stopped already)."""
        restored = self.ckpt.restore_latest(self.setup.abstract_state, self.make_iterator)
        if restored is None:
            return 0, False
        latest, self.state, self.train_iter, self.progress = restored
        logging.info("resumed from checkpoint at step %d", latest)
        patience = self.config.train.patience
        return latest, patience > 0 and self.progress.evals_without_improvement >= patience

    def _train(self, step: int, stopped: bool, writer: MetricWriter) -> int:
        """Trains from `step` to the end (or early stop); returns the last step."""
        config = self.config
        # Checkpoints at evaluation steps (and at the last step) are saved after validating.
        evaluated = step > 0 and (step % self.eval_every == 0 or step == self.total_steps)
        last_eval = step if evaluated else -1
        step_fn = make_step_fn(self.setup, config)
        batch_sharding = NamedSharding(self.mesh, P("data"))

        def next_batch():
            batch = next(self.train_iter)
            return {k: jax.device_put(v, batch_sharding) for k, v in batch.items()}

        tick, tick_step = time.time(), step
        pending = None  # metrics of the last log step, read one step late (no host sync)
        batch = next_batch() if step < self.total_steps and not stopped else None
        while batch is not None:
            self.state, metrics = step_fn(self.state, batch)  # dispatched, runs asynchronously
            step += 1
            if pending is not None:
                self._log(*pending, writer)
                pending = None
            if step % config.train.log_every_steps == 0:
                now = time.time()
                rate = (step - tick_step) * config.train.batch_size / max(now - tick, 1e-9)
                pending = (step, metrics, rate)
                tick, tick_step = now, step
            if step % self.eval_every == 0 or step == self.total_steps:
                self._check_finite()
                stopped = self._record_eval(step, self.validate(self.state.params), writer)
                last_eval = step
                self.ckpt.save(step, self.state, self.train_iter, self.progress)
                tick, tick_step = time.time(), step  # examples/s excludes evaluation
            elif step % config.checkpoint.every_steps == 0:
                self._check_finite()
                self.ckpt.save(step, self.state, self.train_iter, self.progress)
            # The next batch is read and sent while this step computes, after any checkpoint
            # of this step saved the iterator (so a resumed run reads the same batches).
            batch = next_batch() if step < self.total_steps and not stopped else None
        if pending is not None:
            self._log(*pending, writer)
        if last_eval != step:  # e.g. resumed at the last step of an interrupted final save
            self._record_eval(step, self.validate(self.state.params), writer)
            self.ckpt.save(step, self.state, self.train_iter, self.progress)
        return step

    def restore_best_params(self) -> nnx.State:
        """The parameters of the best checkpoint; sets `self.progress` from the latest one."""
        restored = self.ckpt.restore_latest(self.setup.abstract_state, self.make_iterator)
        if restored is None:
            raise SineError(f"{self.ckpt.directory}: no checkpoint to evaluate; train first")
        self.progress = restored[3]
        best = self.ckpt.restore_state(self.progress.best_step, self.setup.abstract_state)
        return best.params

    def evaluate_best(self) -> dict[str, Any]:
        start_time = time.time()
        return self._final_results(self.restore_best_params(), start_time)

    def _check_finite(self) -> None:
        """Stops (train.on_nonfinite=stop) or reports skipped batches; one host sync."""
        count, first = jax.device_get(
            (self.state.nonfinite_steps, self.state.first_nonfinite_step)
        )
        if count == 0:
            return
        if self.config.train.on_nonfinite == "skip":
            if count > self._reported_nonfinite:
                logging.warning("skipped %d batches with a non-finite loss or gradient", count)
                self._reported_nonfinite = int(count)
            return
        self.ckpt.wait()
        raise SineError(
            f"step {first}: the loss or a gradient is not finite; stopped with the last good "
            f"checkpoint (step {self.ckpt.latest_step()}) kept in {self.ckpt.directory}; try a "
            f"lower train.learning_rate, train.grad_clip_norm, or train.on_nonfinite=skip"
        )

    def _log(self, step: int, metrics, rate: float, writer: MetricWriter) -> None:
        self._check_finite()
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        values["examples_per_sec"] = rate
        writer.write(step, {f"train/{k}": v for k, v in values.items()})
        epoch = step / self.steps_per_epoch
        logging.info(
            "step %d/%d (epoch %.2f): loss %.4f (like %.4f, cov %.4g), %.0f examples/s",
            step, self.total_steps, epoch, values["loss"], values["likelihood"], values["cov"],
            rate,
        )

    def _final_results(self, params, start_time: float) -> dict[str, Any]:
        return _results(
            self.config, self.data, self.eval_fn, params, self.valid_arrays, self.test_arrays,
            self.mesh, self.progress.best_step, start_time,
        )


def _load_data(config: config_dict.ConfigDict, workdir: str):
    """(the dataset, its validation arrays, its test arrays); the preprocessed arrays are
    cached in data.cache_dir, else WORKDIR/cache."""
    cache_dir = config.data.cache_dir or os.path.join(workdir, "cache")
    data = dataset_lib.load_dataset(config.data, cache_dir)
    n = config.model.max_seq_len
    return (data, pipeline.eval_arrays(data, "valid", max_seq_len=n),
            pipeline.eval_arrays(data, "test", max_seq_len=n))


def _make_eval_fn(config: config_dict.ConfigDict, encode_fn, mesh, num_items: int):
    """The jitted evaluation function of `config.data.split`'s protocol (`evaluate`)."""
    kwargs = dict(
        num_items=num_items, mask_history=config.eval.mask_history,
        chunk_size=config.eval.item_chunk_size,
    )
    if config.data.split == "held_out_users":
        return evaluate.make_top_fn(encode_fn, mesh, k=max(config.eval.ks), **kwargs)
    return evaluate.make_rank_fn(encode_fn, mesh, **kwargs)


def _results(
    config, data, eval_fn, params, valid_arrays, test_arrays, mesh, best_step: int,
    start_time: float,
) -> dict[str, Any]:
    """results.json: validation and test metrics of `params`, the config, data and versions."""
    kwargs = dict(batch_size=config.eval.batch_size, mesh=mesh, ks=config.eval.ks)
    valid = evaluate.evaluate(eval_fn, params, valid_arrays, **kwargs)
    test = evaluate.evaluate(eval_fn, params, test_arrays, **kwargs)
    logging.info(
        "test at best step %d: %s",
        best_step, " ".join(f"{k}={v:.4f}" for k, v in sorted(test.items())),
    )
    return {
        "test": test,
        "valid": valid,
        "best_step": best_step,
        "config": config.to_dict(),
        "data": {
            "users": data.num_users,
            "items": data.num_items,
            "interactions": int(len(data.items)),
        },
        "environment": environment(),
        "seed": config.train.seed,
        "wall_seconds": time.time() - start_time,
    }


def _popularity_results(config: config_dict.ConfigDict, workdir: str) -> dict[str, Any]:
    """`model.name=pop`: every user gets the items by training count; nothing is trained."""
    start_time = time.time()
    config_checks.validate(config)
    mesh = make_mesh(config)
    data, valid_arrays, test_arrays = _load_data(config, workdir)
    counts = np.zeros(padded_table_rows(data.num_items, mesh.shape["model"]), np.float32)
    counts[: data.num_items + 1] = data.item_counts
    eval_fn = _make_eval_fn(config, evaluate.popularity_encode, mesh, data.num_items)
    return _results(
        config, data, eval_fn, jax.device_put(counts, NamedSharding(mesh, P())),
        valid_arrays, test_arrays, mesh, 0, start_time,
    )


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """The best checkpoint of a workdir with what it needs to run (see `restore_best`)."""

    setup: Setup
    params: nnx.State
    data: dataset_lib.SequenceData
    best_step: int


def restore_best(config: config_dict.ConfigDict, workdir: str) -> TrainedModel:
    """Loads the dataset of CONFIG and the parameters of WORKDIR's best checkpoint.

    Only the parameters are read, so checkpoints whose train state had other fields (written
    by an earlier version) still load.

    Raises:
      SineError: WORKDIR has no checkpoint, it trained another model (`model.*` differs from
        its config.json), or the data cannot be read.
    """
    run_config.check_model_matches(config, workdir)
    with _disk_errors(workdir):
        trainer = _Trainer(config, workdir)
        try:
            best_step = trainer.ckpt.best_step()
            if best_step is None or best_step < 0:
                raise SineError(f"{trainer.ckpt.directory}: no checkpoint to restore; train first")
            params = trainer.ckpt.restore_params(best_step, trainer.setup.abstract_state.params)
        finally:
            trainer.ckpt.close()
    return TrainedModel(trainer.setup, params, trainer.data, best_step)


def evaluate_checkpoint(config: config_dict.ConfigDict, workdir: str) -> dict[str, Any]:
    """Validation and test metrics of the best checkpoint in WORKDIR (no training)."""
    if config.model.name == "pop":
        return _popularity_results(config, workdir)
    run_config.check_model_matches(config, workdir)
    with _disk_errors(workdir):
        return _Trainer(config, workdir).evaluate_best()


def train_and_evaluate(
    config: config_dict.ConfigDict, workdir: str, *, allow_config_change: bool = False
) -> dict[str, Any]:
    """Trains (resuming from WORKDIR/checkpoints), tests at the best checkpoint, writes
    WORKDIR/results.json and returns its contents. `model.name=pop` trains nothing: its
    results are the popularity ranking's.

    Raises:
      SineError: a bad config or input, a rerun with a different config (unless
        `allow_config_change`), non-finite training, or an unwritable workdir.
    """
    with _disk_errors(workdir):
        if config.model.name == "pop":
            os.makedirs(workdir, exist_ok=True)
            results = _popularity_results(config, workdir)
        else:
            trainer = _Trainer(config, workdir)
            run_config.check_or_record(config, workdir, allow_change=allow_config_change)
            results = trainer.run()
        write_json_atomic(os.path.join(workdir, "results.json"), results)
    return results


@contextlib.contextmanager
def _disk_errors(workdir: str):
    """Turns a failing write (full disk, read-only or missing directory) into a SineError."""
    try:
        yield
    except SineError:
        raise
    except Exception as e:  # noqa: BLE001 - only OS errors (possibly wrapped) are converted
        cause = e
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        where = cause.filename or workdir
        raise SineError(f"{where}: {cause.strerror or cause} (workdir {workdir})") from e


def write_json_atomic(path: str, obj: Any) -> None:
    """Writes JSON through a temporary file and a rename: never a half-written file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def _json_default(obj):
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")
