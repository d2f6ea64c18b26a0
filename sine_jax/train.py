"""The training loop: state, pure train step, periodic validation, checkpoints, results.

Shapes: B global batch, n history length, D dim, M items.
"""

import contextlib
import dataclasses
import functools
import json
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

from sine_jax import checkpointing, config_checks, evaluate, losses, run_config
from sine_jax import model as model_lib
from sine_jax.data import dataset as dataset_lib
from sine_jax.data import pipeline
from sine_jax.errors import SineError
from sine_jax.metric_writer import MetricWriter


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (the RNG is derived from the step)."""

    step: jax.Array  # int32 []
    params: nnx.State
    opt_state: optax.OptState
    nonfinite_steps: jax.Array  # int32 [], steps whose loss or gradient was NaN/Inf
    first_nonfinite_step: jax.Array  # int32 [], the first such step (-1 = none)


@dataclasses.dataclass(frozen=True)
class Setup:
    """What the step and evaluation functions close over (static, not traced)."""

    graphdef: nnx.GraphDef
    rest: nnx.State  # non-parameter variables (none for SINE; kept for completeness)
    tx: optax.GradientTransformation
    mesh: jax.sharding.Mesh
    state_sharding: Any
    abstract_state: Any


def make_mesh(config: config_dict.ConfigDict) -> jax.sharding.Mesh:
    """The ('data',) mesh over `mesh.data` devices (all by default)."""
    size = config_checks.data_axis_size(config, jax.device_count())
    return jax.make_mesh(
        (size,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:size]
    )


def make_optimizer(train_config, total_steps: int) -> optax.GradientTransformation:
    """Adam with optional linear warm-up, cosine decay and global-norm clipping."""
    lr = train_config.learning_rate
    warmup = min(train_config.warmup_steps, total_steps)
    if train_config.lr_decay == "cosine":
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, lr, max(warmup, 1), max(total_steps, warmup + 1), end_value=0.0
        )
    elif warmup:
        schedule = optax.join_schedules(
            [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup]
        )
    else:
        schedule = lr
    parts = [optax.adam(schedule)]
    if train_config.grad_clip_norm > 0:
        parts.insert(0, optax.clip_by_global_norm(train_config.grad_clip_norm))
    return optax.chain(*parts)


def cov_weight(config: config_dict.ConfigDict) -> float:
    """lambda of eq 11: the config's value, else 0.5 (paper preset) or 0 (official preset)."""
    if config.loss.cov_weight is not None:
        return float(config.loss.cov_weight)
    return 0.0 if config.model.preset == "official" else 0.5


def create_train_state(
    config: config_dict.ConfigDict, num_items: int, mesh: jax.sharding.Mesh, total_steps: int
) -> tuple[Setup, TrainState]:
    """Builds the model and optimizer state directly with their (replicated) shardings."""
    tx = make_optimizer(config.train, total_steps)
    seed = config.train.seed

    def build():
        return model_lib.build_model(config.model, num_items, nnx.Rngs(seed))

    abstract_model = nnx.eval_shape(build)  # validates the model config, allocates nothing
    graphdef, _, rest = nnx.split(abstract_model, nnx.Param, ...)

    def init():
        params = nnx.state(build(), nnx.Param)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            nonfinite_steps=jnp.zeros((), jnp.int32),
            first_nonfinite_step=jnp.full((), -1, jnp.int32),
        )

    abstract_state = jax.eval_shape(init)
    replicated = NamedSharding(mesh, P())
    state_sharding = jax.tree.map(lambda _: replicated, abstract_state)
    state = jax.jit(init, out_shardings=state_sharding)()
    abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        abstract_state,
        state_sharding,
    )
    setup = Setup(graphdef, rest, tx, mesh, state_sharding, abstract_state)
    return setup, state


def encode(setup: Setup, params: nnx.State, history: jax.Array):
    """(user vectors [B, D], item table [M + 1, D]) for histories int32 [B, n]."""
    model = nnx.merge(setup.graphdef, params, setup.rest)
    return model(history).user_vector, model.item_embedding[...]


def train_step(
    state: TrainState, batch: dict[str, jax.Array], *, setup: Setup, loss_config, lam: float,
    base_rng: jax.Array, skip_nonfinite: bool = False,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One Adam step on L = L_like + lambda L_c (eqs 9-11). Pure; no host syncs.

    A step whose loss or gradient is not finite is counted in the state; with
    `skip_nonfinite` its update is dropped (parameters and moments unchanged).

    Args:
      state: the train state.
      batch: history int32 [B, n], target int32 [B].

    Returns:
      (new state, scalar metrics: loss, likelihood, cov, grad_norm).
    """
    rng = jax.random.fold_in(base_rng, state.step)

    def loss_fn(params):
        model = nnx.merge(setup.graphdef, params, setup.rest)
        user_vectors = model(batch["history"]).user_vector  # [B, D]
        table = model.item_embedding[...]  # [M + 1, D]
        if loss_config.name == "full_softmax":
            like = losses.full_softmax_loss(user_vectors, table, batch["target"])
        else:
            like = losses.sampled_softmax_loss(
                user_vectors,
                table,
                batch["target"],
                rng,
                loss_config.negatives_per_example * batch["target"].shape[0],
                logq_correction=loss_config.logq_correction,
                remove_accidental_hits=loss_config.remove_accidental_hits,
            )
        like = jnp.mean(like)
        cov = losses.covariance_regularizer(model.prototypes[...])
        return like + lam * cov, (like, cov)

    (loss, (like, cov)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = setup.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if skip_nonfinite:
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        params = jax.tree.map(keep, params, state.params)
        opt_state = jax.tree.map(keep, opt_state, state.opt_state)
    first_bad = jnp.where(
        (state.first_nonfinite_step < 0) & ~finite, state.step + 1, state.first_nonfinite_step
    )
    new_state = TrainState(
        step=state.step + 1,
        params=params,
        opt_state=opt_state,
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
        cache_dir = config.data.cache_dir or os.path.join(workdir, "cache")
        self.data = dataset_lib.load_dataset(config.data, cache_dir)
        n = config.model.max_seq_len
        self.valid_arrays = pipeline.eval_arrays(self.data, "valid", max_seq_len=n)
        self.test_arrays = pipeline.eval_arrays(self.data, "test", max_seq_len=n)
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
            config, self.data.num_items, self.mesh, self.total_steps
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
        eval_kwargs = dict(
            mask_history=config.eval.mask_history, chunk_size=config.eval.item_chunk_size
        )
        encode_fn = functools.partial(encode, self.setup)
        if config.data.split == "held_out_users":
            self.eval_fn = evaluate.make_top_fn(
                encode_fn, self.mesh, k=max(config.eval.ks), **eval_kwargs
            )
        else:
            self.eval_fn = evaluate.make_rank_fn(encode_fn, self.mesh, **eval_kwargs)

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
        tick, tick_step = time.time(), step
        pending = None  # metrics of the last log step, read one step late (no host sync)
        while step < self.total_steps and not stopped:
            batch = next(self.train_iter)
            batch = {k: jax.device_put(v, batch_sharding) for k, v in batch.items()}
            self.state, metrics = step_fn(self.state, batch)
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
        cfg = self.config
        kwargs = dict(batch_size=cfg.eval.batch_size, mesh=self.mesh, ks=cfg.eval.ks)
        valid = evaluate.evaluate(self.eval_fn, params, self.valid_arrays, **kwargs)
        test = evaluate.evaluate(self.eval_fn, params, self.test_arrays, **kwargs)
        logging.info(
            "test at best step %d: %s",
            self.progress.best_step, " ".join(f"{k}={v:.4f}" for k, v in sorted(test.items())),
        )
        return {
            "test": test,
            "valid": valid,
            "best_step": self.progress.best_step,
            "config": cfg.to_dict(),
            "data": {
                "users": self.data.num_users,
                "items": self.data.num_items,
                "interactions": int(len(self.data.items)),
            },
            "environment": environment(),
            "seed": cfg.train.seed,
            "wall_seconds": time.time() - start_time,
        }


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
      SineError: WORKDIR has no checkpoint, or the data cannot be read.
    """
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
    with _disk_errors(workdir):
        return _Trainer(config, workdir).evaluate_best()


def train_and_evaluate(
    config: config_dict.ConfigDict, workdir: str, *, allow_config_change: bool = False
) -> dict[str, Any]:
    """Trains (resuming from WORKDIR/checkpoints), tests at the best checkpoint, writes
    WORKDIR/results.json and returns its contents.

    Raises:
      SineError: a bad config or input, a rerun with a different config (unless
        `allow_config_change`), non-finite training, or an unwritable workdir.
    """
    with _disk_errors(workdir):
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
