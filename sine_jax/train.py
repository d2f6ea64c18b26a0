"""The training loop and what runs around it: a `Run` (the fixed parts of one run) built by
`build_run`, `train_loop` over the train state (periodic validation, early stopping,
checkpoints, exact resume), the test at the best checkpoint, and the evaluation or restore of
a finished run's best parameters.

Entry points: `train_and_evaluate` (--mode=train), `evaluate_checkpoint` (--mode=eval),
`restore_best` (--mode=export, the prototype analysis). Shapes: B global batch, n history
length, M items.
"""

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import nnx
from ml_collections import config_dict

from sine_jax import checkpointing, config_checks, evaluate, multihost, progress, run_config
from sine_jax import sharding
from sine_jax import step as step_lib
from sine_jax import workdir as workdir_lib
from sine_jax.data import dataset as dataset_lib
from sine_jax.data import pipeline
from sine_jax.errors import SineError
from sine_jax.metric_writer import MetricWriter


@dataclasses.dataclass(frozen=True)
class Run:
    """The fixed parts of one run: what the loop and the evaluation read, never change."""

    config: config_dict.ConfigDict
    workdir: str
    mesh: jax.sharding.Mesh
    data: dataset_lib.SequenceData
    valid_arrays: dict[str, np.ndarray]
    test_arrays: dict[str, np.ndarray]
    model: step_lib.SplitModel
    eval_fn: Callable  # `evaluate.make_rank_fn` or `make_top_fn`, by data.split's protocol
    interest_fn: Callable | None  # `evaluate.make_interest_fn` (models with interests)
    steps_per_epoch: int
    total_steps: int
    eval_every: int  # validation (and a checkpoint) every this many steps


def build_run(config: config_dict.ConfigDict, workdir: str) -> Run:
    """Checks the config, makes the mesh, loads the data (cached in data.cache_dir, else
    WORKDIR/cache) and splits the model; no parameter is allocated.

    Raises:
      ConfigError: a bad config.
      SineError: unreadable data, or fewer training examples than one batch.
    """
    config_checks.check_config(config)
    os.makedirs(workdir, exist_ok=True)
    mesh = sharding.make_mesh(config)
    data, valid_arrays, test_arrays = _load_data(config, workdir)
    batch_size = config.train.batch_size
    steps_per_epoch = pipeline.num_train_examples(data) // batch_size
    if steps_per_epoch == 0:
        raise SineError(
            f"train.batch_size={batch_size} is larger than the "
            f"{pipeline.num_train_examples(data)} training examples"
        )
    model = step_lib.split_model(config, data.num_items, mesh, data.item_categories)
    return Run(
        config=config,
        workdir=workdir,
        mesh=mesh,
        data=data,
        valid_arrays=valid_arrays,
        test_arrays=test_arrays,
        model=model,
        eval_fn=_make_eval_fn(config, model.queries_and_table, mesh, data.num_items),
        interest_fn=(
            evaluate.make_interest_fn(model.interest_summary, mesh)
            if model.num_prototypes else None
        ),
        steps_per_epoch=steps_per_epoch,
        total_steps=config.train.num_epochs * steps_per_epoch,
        eval_every=config.eval.every_steps or steps_per_epoch,
    )


def validation_metrics(run: Run, params: nnx.State) -> dict[str, float]:
    """The validation users' metrics of `params` (what early stopping reads)."""
    return evaluate.evaluate(
        run.eval_fn, params, run.valid_arrays,
        batch_size=run.config.eval.batch_size, mesh=run.mesh, ks=run.config.eval.ks,
    )


def interest_diagnostics(run: Run, params: nnx.State, arrays) -> dict[str, float] | None:
    """`evaluate.interest_diagnostics` of the users of `arrays` (None for a model without
    interests)."""
    if run.interest_fn is None:
        return None
    return evaluate.interest_diagnostics(
        run.interest_fn, params, arrays, batch_size=run.config.eval.batch_size, mesh=run.mesh,
        num_prototypes=run.model.num_prototypes,
    )


def train_loop(
    run: Run, context: step_lib.StepContext, state: step_lib.TrainState,
    ckpt: checkpointing.Checkpointer, writer: MetricWriter,
) -> tuple[int, int]:
    """Trains from the newest usable checkpoint in `ckpt` (else from `state`, which is
    donated) to the last step or an early stop. Every `run.eval_every` steps (and at the last
    step) it validates, then checkpoints; every `checkpoint.every_steps` it checkpoints. A
    resumed run reads the same batches and takes the same steps as an uninterrupted one.

    Returns:
      (the best step, the last step).

    Raises:
      SineError: a non-finite loss or gradient with train.on_nonfinite=stop.
    """
    config = run.config
    batch_size = config.train.batch_size
    rows = sharding.local_rows(run.mesh, batch_size)  # this process's rows of every batch
    train_dataset = pipeline.make_train_dataset(
        run.data, max_seq_len=config.model.max_seq_len, batch_size=batch_size,
        seed=config.train.seed, rows=rows,
    )
    if jax.process_count() > 1:
        logging.info("process %d of %d reads rows %d..%d (%d examples) of each batch of %d",
                     jax.process_index(), jax.process_count(), rows[0], rows[1] - 1,
                     rows[1] - rows[0], batch_size)
    stopping = checkpointing.EarlyStopping(config.train.patience)
    restored = ckpt.restore_latest(context.abstract_state, lambda: iter(train_dataset))
    if restored is None:
        step, train_iter = 0, iter(train_dataset)
    else:
        step, state, train_iter, record = restored
        stopping = checkpointing.EarlyStopping(config.train.patience, record)
        logging.info("resumed from checkpoint at step %d", step)
    check_finite = _NonfiniteCheck(config.train.on_nonfinite, ckpt)
    barrier = _step_barrier()
    step_fn = step_lib.make_step_fn(context, config)

    def next_batch():
        if step >= run.total_steps or stopping.should_stop:
            return None
        return sharding.global_batch(next(train_iter), run.mesh, batch_size)

    def validate_and_save():
        _record_validation(run, step, validation_metrics(run, state.params), stopping, writer)
        interests = interest_diagnostics(run, state.params, run.valid_arrays)
        if interests is not None:
            writer.write(step, {f"valid/interests/{k}": v for k, v in interests.items()})
            logging.info("step %d: interests %s", step, _format(interests))
        ckpt.save(step, state, train_iter, stopping.record)

    # Checkpoints at evaluation steps (and at the last step) are saved after validating.
    evaluated = step > 0 and (step % run.eval_every == 0 or step == run.total_steps)
    last_eval = step if evaluated else -1
    timing = progress.Progress(run.total_steps, batch_size, run.eval_every, step)
    pending = None  # metrics of the last log step, read one step late (no host sync)
    batch = next_batch()
    compiling = batch is not None
    if compiling:
        logging.info("compiling the train step (the first step waits for it) ...")
    while batch is not None:
        state, metrics = step_fn(state, batch)  # dispatched, runs asynchronously
        step += 1
        if compiling:
            _log_compiled(timing, step, metrics)
            compiling = False
        if pending is not None:
            check_finite(state)
            _log_train_metrics(run, *pending, timing, writer)
            pending = None
        if step % config.train.log_every_steps == 0:
            timing.measure(step)
            pending = (step, metrics)
        if step % run.eval_every == 0 or step == run.total_steps:
            check_finite(state)
            with timing.excluded():  # examples/s excludes evaluation
                validate_and_save()
            last_eval = step
        elif step % config.checkpoint.every_steps == 0:
            check_finite(state)
            ckpt.save(step, state, train_iter, stopping.record)
        if barrier is not None:
            barrier(step)
        # The next batch is read and sent while this step computes, after any checkpoint
        # of this step saved the iterator (so a resumed run reads the same batches).
        batch = next_batch()
    if pending is not None:
        check_finite(state)
        _log_train_metrics(run, *pending, timing, writer)
    if last_eval != step:  # e.g. resumed at the last step of an interrupted final save
        validate_and_save()
    return stopping.record.best_step, step


# Fault injection for tests: SINE_JAX_STEP_BARRIER=STEP:FD makes the loop stop at STEP (after
# its validation and the start of its checkpoint save), write "STEP\n" to the socket FD and
# wait there for one byte back, so that a test can kill the process at a known step; the
# byte FAIL_BYTE makes the loop fail there instead (a SineError), as a process of a
# multi-process run might.
STEP_BARRIER_ENV = "SINE_JAX_STEP_BARRIER"
FAIL_BYTE = b"!"


def _step_barrier() -> Callable[[int], None] | None:
    """The hook of STEP_BARRIER_ENV, or None when it is unset."""
    spec = os.environ.get(STEP_BARRIER_ENV)
    if not spec:
        return None
    at, fd = (int(x) for x in spec.split(":"))

    def barrier(step: int) -> None:
        if step == at:
            os.write(fd, f"{step}\n".encode())
            # Until the other side answers, closes, or kills this process.
            if os.read(fd, 1) == FAIL_BYTE:
                raise SineError(f"step {step}: failure injected by {STEP_BARRIER_ENV}")

    return barrier


class _NonfiniteCheck:
    """Reads the train state's non-finite step count (one host sync): stops the run
    (train.on_nonfinite=stop) or reports newly skipped batches (skip)."""

    def __init__(self, on_nonfinite: str, ckpt: checkpointing.Checkpointer):
        self.skip = on_nonfinite == "skip"
        self.ckpt = ckpt
        self.reported = 0

    def __call__(self, state: step_lib.TrainState) -> None:
        count, first = jax.device_get((state.nonfinite_steps, state.first_nonfinite_step))
        if count == 0:
            return
        if self.skip:
            if count > self.reported:
                logging.warning("skipped %d batches with a non-finite loss or gradient", count)
                self.reported = int(count)
            return
        self.ckpt.wait()
        last = self.ckpt.latest_step()
        kept = ("before any checkpoint was written" if last is None else
                f"with the last good checkpoint (step {last}) kept in {self.ckpt.directory}")
        raise SineError(
            f"step {first}: the loss or a gradient is not finite; stopped {kept}; try a "
            f"lower train.learning_rate, train.grad_clip_norm, or train.on_nonfinite=skip"
        )


def _record_validation(
    run: Run, step: int, metrics: dict[str, float], stopping: checkpointing.EarlyStopping,
    writer: MetricWriter,
) -> None:
    """Writes and logs the validation metrics of `step` and updates early stopping."""
    writer.write(step, {f"valid/{k}": v for k, v in metrics.items()})
    logging.info("step %d: validation %s", step, _format(metrics))
    stopping.update(step, metrics[run.config.eval.metric])


def _format(values: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in sorted(values.items()))


def _log_compiled(timing: progress.Progress, step: int, metrics) -> None:
    """Waits for the first step (compiled on its first call) and logs how long it took."""
    jax.block_until_ready(metrics)
    logging.info("compiled; the first step took %s", progress.duration(
        timing.first_step_done(step)))


def _log_train_metrics(
    run: Run, step: int, metrics, timing: progress.Progress, writer: MetricWriter
) -> None:
    """The train metrics of `step` to TensorBoard and metrics.jsonl, with the smoothed
    examples/s, and a progress line: loss, epoch, examples/s, elapsed and most time left."""
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if timing.rate is not None:
        values["examples_per_sec"] = timing.rate
    writer.write(step, {f"train/{k}": v for k, v in values.items()})
    logging.info(
        "step %d/%d (epoch %.2f of %d): loss %.4f (like %.4f, cov %.4g); %s",
        step, run.total_steps, step / run.steps_per_epoch, run.config.train.num_epochs,
        values["loss"], values["likelihood"], values["cov"], timing.line(step),
    )


def _checkpointer(run: Run) -> checkpointing.Checkpointer:
    return checkpointing.Checkpointer(
        os.path.join(run.workdir, "checkpoints"), keep=run.config.checkpoint.keep
    )


def _train_and_test(run: Run) -> dict[str, Any]:
    """`train_loop`, then the results of the best checkpoint (results.json's contents)."""
    start_time = time.time()
    context, state = step_lib.create_train_state(run.config, run.model, run.total_steps)
    ckpt = _checkpointer(run)
    writer = MetricWriter(run.workdir)
    try:
        best_step, last_step = train_loop(run, context, state, ckpt, writer)
        ckpt.wait()
        best_step, params = restore_best_params(run, best_step)
        results = _run_results(run, params, best_step, start_time)
        writer.write(last_step, {f"test/{k}": v for k, v in results["test"].items()})
    finally:  # an interrupted run still completes the checkpoint saves in flight
        writer.close()
        ckpt.wait()
        ckpt.close()
    return results


def restore_best_params(run: Run, best_step: int | None = None) -> tuple[int, nnx.State]:
    """(best step, its parameters) of RUN's workdir (`best_step`: the one the checkpoints
    record). Only the parameters are read (no optimizer state, no data iterator), so
    checkpoints whose train state had other fields (written by an earlier version) still
    load. When the best checkpoint is damaged, the loadable one with the best validation
    metric (`eval.metric`) stands in, with a warning.

    Raises:
      SineError: no checkpoint, or none loads.
    """
    def score(params: nnx.State) -> float:
        return validation_metrics(run, params)[run.config.eval.metric]

    ckpt = _checkpointer(run)  # a fresh one: the saving one restores whole train states only
    try:
        return ckpt.restore_best_params(run.model.abstract_params, best_step, score)
    finally:
        ckpt.close()


def _load_data(config: config_dict.ConfigDict, workdir: str):
    """(the dataset, its validation arrays, its test arrays); the preprocessed arrays are
    cached in data.cache_dir, else WORKDIR/cache."""
    cache_dir = config.data.cache_dir or os.path.join(workdir, "cache")
    data = dataset_lib.load_dataset(config.data, cache_dir)
    n = config.model.max_seq_len
    return (data, pipeline.eval_arrays(data, "valid", max_seq_len=n),
            pipeline.eval_arrays(data, "test", max_seq_len=n))


def _make_eval_fn(
    config: config_dict.ConfigDict, queries_and_table: evaluate.QueriesAndTableFn, mesh,
    num_items: int,
):
    """The jitted evaluation function of `config.data.split`'s protocol (`evaluate`)."""
    kwargs = dict(
        num_items=num_items, mask_history=config.eval.mask_history,
        chunk_size=config.eval.item_chunk_size,
    )
    if config.data.split == "held_out_users":
        return evaluate.make_top_fn(queries_and_table, mesh, k=max(config.eval.ks), **kwargs)
    return evaluate.make_rank_fn(queries_and_table, mesh, **kwargs)


def _run_results(run: Run, params, best_step: int, start_time: float) -> dict[str, Any]:
    results = _results(
        run.config, run.data, run.eval_fn, params, run.valid_arrays, run.test_arrays, run.mesh,
        best_step, start_time,
    )
    interests = interest_diagnostics(run, params, run.test_arrays)
    if interests is not None:  # the test users'
        results["interests"] = interests
        logging.info("test users' interests: %s", _format(interests))
    return results


def _results(
    config, data, eval_fn, params, valid_arrays, test_arrays, mesh, best_step: int,
    start_time: float,
) -> dict[str, Any]:
    """results.json: validation and test metrics of `params`, the config, data and versions."""
    kwargs = dict(batch_size=config.eval.batch_size, mesh=mesh, ks=config.eval.ks)
    valid = evaluate.evaluate(eval_fn, params, valid_arrays, **kwargs)
    test = evaluate.evaluate(eval_fn, params, test_arrays, **kwargs)
    logging.info("test at best step %d: %s", best_step, _format(test))
    return {
        "test": test,
        "valid": valid,
        "best_step": best_step,
        "config": run_config.with_resolved_switches(config.to_dict()),
        "data": {
            "users": data.num_users,
            "items": data.num_items,
            "interactions": int(len(data.items)),
        },
        "environment": workdir_lib.environment(),
        "seed": config.train.seed,
        "wall_seconds": time.time() - start_time,
    }


def _popularity_results(config: config_dict.ConfigDict, workdir: str) -> dict[str, Any]:
    """`model.name=pop`: every user gets the items by training count; nothing is trained."""
    start_time = time.time()
    config_checks.check_config(config)
    mesh = sharding.make_mesh(config)
    data, valid_arrays, test_arrays = _load_data(config, workdir)
    counts = np.zeros(sharding.padded_table_rows(data.num_items, mesh.shape["model"]), np.float32)
    counts[: data.num_items + 1] = data.item_counts
    eval_fn = _make_eval_fn(config, evaluate.popularity_queries_and_table, mesh, data.num_items)
    counts = jax.make_array_from_process_local_data(sharding.replicated(mesh), counts)
    return _results(
        config, data, eval_fn, counts, valid_arrays, test_arrays, mesh, 0, start_time,
    )


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """The best checkpoint of a workdir with what it needs to run (see `restore_best`)."""

    model: step_lib.SplitModel
    params: nnx.State
    data: dataset_lib.SequenceData
    best_step: int


def restore_best(
    config: config_dict.ConfigDict, workdir: str, *, allow_input_change: bool = False
) -> TrainedModel:
    """Loads the dataset of CONFIG and the parameters of WORKDIR's best checkpoint
    (`restore_best_params`), holding the workdir's lock.

    Raises:
      SineError: WORKDIR has no checkpoint or none loads, it trained another model
        (`model.*` differs from its config.json) or on other input content (unless
        `allow_input_change`), the data cannot be read, or another process holds WORKDIR.
    """
    with _lock(workdir), workdir_lib.disk_errors(workdir):
        run = build_trained_run(config, workdir, allow_input_change)
        best_step, params = restore_best_params(run)
    return TrainedModel(run.model, params, run.data, best_step)


def build_trained_run(
    config: config_dict.ConfigDict, workdir: str, allow_input_change: bool = False
) -> Run:
    """`build_run` for a workdir that trained (hold its lock, `workdir.lock`).

    Raises:
      SineError: as `build_run`, or WORKDIR trained another model (`model.*` differs from
        its config.json) or on other input content (unless `allow_input_change`).
    """
    run_config.check_model_matches(config, workdir)
    run = build_run(config, workdir)
    run_config.check_inputs(workdir, dataset_lib.input_files(config.data),
                            allow_change=allow_input_change)
    return run


def evaluate_checkpoint(
    config: config_dict.ConfigDict, workdir: str, *, allow_input_change: bool = False
) -> dict[str, Any]:
    """Validation and test metrics of the best checkpoint in WORKDIR (no training), holding
    the workdir's lock; raises as `restore_best`."""
    if config.model.name == "pop":
        return _popularity_results(config, workdir)
    with _lock(workdir), workdir_lib.disk_errors(workdir):
        run = build_trained_run(config, workdir, allow_input_change)
        start_time = time.time()
        best_step, params = restore_best_params(run)
        return _run_results(run, params, best_step, start_time)


def train_and_evaluate(
    config: config_dict.ConfigDict, workdir: str, *, allow_config_change: bool = False
) -> dict[str, Any]:
    """Trains (resuming from WORKDIR/checkpoints), tests at the best checkpoint, writes
    WORKDIR/results.json and returns its contents. `model.name=pop` trains nothing: its
    results are the popularity ranking's.

    Holds the workdir's lock (`workdir.lock`) from before anything is written. In a
    multi-process run, process 0 holds it, checks and records config.json and inputs.json
    and writes results.json, metrics and TensorBoard; every process trains and writes its
    part of the checkpoints.

    Raises:
      SineError: a bad config or input, a rerun with a different config or on other input
        content (unless `allow_config_change`), non-finite training, an unwritable workdir,
        or another process holding it.
    """
    config_checks.check_config(config)  # a bad value writes nothing, not even the workdir
    with _lock(workdir), workdir_lib.disk_errors(workdir):
        if config.model.name == "pop":
            results = _popularity_results(config, workdir)
        else:
            run = build_run(config, workdir)
            if multihost.is_primary():
                run_config.check_or_record(config, workdir, allow_change=allow_config_change)
                run_config.check_or_record_inputs(
                    workdir, dataset_lib.input_files(config.data),
                    allow_change=allow_config_change,
                )
            multihost.barrier("workdir checked")  # no process trains on a refused workdir
            results = _train_and_test(run)
        if multihost.is_primary():
            workdir_lib.write_json_atomic(os.path.join(workdir, "results.json"), results)
    return results


def _lock(workdir: str):
    """The workdir's lock (`workdir.lock`) for process 0; the other processes of a
    multi-process run share the workdir with it and take none."""
    return workdir_lib.lock(workdir) if multihost.is_primary() else contextlib.nullcontext()
