"""The training loop by its effects: non-finite steps skipped (the state bitwise unchanged),
early stopping (patience, and a rerun after a stop trains nothing more), and the branches
that end a run before it starts."""

import jax
import numpy as np
import pytest

from configs import synthetic
from sine_jax import checkpointing, sharding, step, train
from sine_jax.errors import SineError
from sine_jax.metric_writer import MetricWriter

NUM_ITEMS = 40


def _step_config(**train_fields):
    config = synthetic.get_config()
    config.model.embed_dim = 8
    config.model.num_prototypes = 6
    config.model.max_seq_len = 4
    config.train.batch_size = 8
    config.loss.negatives_per_example = 2  # S = 16 < M
    config.mesh.data = config.mesh.model = 1
    config.train.update(train_fields)
    return config


def _batch(seed):
    rng = np.random.default_rng(seed)
    return {"history": rng.integers(1, NUM_ITEMS + 1, (8, 4)).astype(np.int32),
            "target": rng.integers(1, NUM_ITEMS + 1, 8).astype(np.int32)}


def _host(state):
    """The state as numpy arrays (the step donates its input)."""
    return jax.tree.map(np.asarray, jax.device_get(state))


def _assert_bitwise_equal(a, b):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), jax.tree_util.keystr(path)


@pytest.mark.parametrize("sparse", [False, True])
def test_a_nonfinite_step_is_skipped_leaving_the_state_bitwise_unchanged(sparse):
    """A learning rate of 1e30 takes one finite step to parameters of size 1e30; the next
    loss overflows. With on_nonfinite=skip that step changes nothing but the counters."""
    config = _step_config(learning_rate=1e30, on_nonfinite="skip", sparse_item_updates=sparse)
    mesh = sharding.make_mesh(config, jax.devices()[:1])
    context, state = step.create_train_state(
        config, step.split_model(config, NUM_ITEMS, mesh), total_steps=10)
    step_fn = step.make_step_fn(context, config)
    state, metrics = step_fn(state, _batch(0))
    assert np.isfinite(metrics["loss"])
    first = _host(state)
    assert np.abs(first.params["prototypes"]).max() > 1e29
    state, metrics = step_fn(state, _batch(1))
    assert not np.isfinite(metrics["loss"])
    skipped = _host(state)
    _assert_bitwise_equal(skipped.params, first.params)
    _assert_bitwise_equal(skipped.opt_state, first.opt_state)
    _assert_bitwise_equal(skipped.item_moments, first.item_moments)
    assert (skipped.step, skipped.nonfinite_steps, skipped.first_nonfinite_step) == (2, 1, 2)


def test_early_stopping_counts_validations_without_a_new_best():
    stopping = checkpointing.EarlyStopping(patience=2)
    # A new best resets the count; a tie is no improvement.
    for step_number, metric, stop in [(10, 0.1, False), (20, 0.3, False), (30, 0.2, False),
                                      (40, 0.35, False), (50, 0.35, False), (60, 0.2, True)]:
        assert stopping.update(step_number, metric) is stop, step_number
    assert stopping.record == checkpointing.Progress(0.35, 40, 2)
    # A record restored from a checkpoint goes on counting where it stopped.
    resumed = checkpointing.EarlyStopping(2, checkpointing.Progress(0.35, 40, 1))
    assert not resumed.should_stop and resumed.update(70, 0.1)
    never = checkpointing.EarlyStopping(patience=0)
    assert not any(never.update(10 * i, 0.0) for i in range(1, 20))


def _train_loop(config, workdir):
    """(best step, last step) of `train.train_loop` on WORKDIR, as `--mode=train` runs it."""
    run = train.build_run(config, str(workdir))
    context, state = step.create_train_state(config, run.model, run.total_steps)
    ckpt = checkpointing.Checkpointer(str(workdir / "checkpoints"), keep=2)
    writer = MetricWriter(str(workdir))
    try:
        return train.train_loop(run, context, state, ckpt, writer)
    finally:
        ckpt.wait()
        ckpt.close()
        writer.close()


def test_early_stop_then_a_rerun_trains_nothing_more(tmp_path, monkeypatch):
    """Validation metrics scripted by step: a best at step 10, then two validations without
    a new best stop the run at step 20 (patience 2); rerunning the same workdir restores the
    stopped record and takes no step and no validation."""
    config = synthetic.get_config("tiny")
    config.eval.every_steps, config.train.patience = 5, 2
    config.checkpoint.every_steps = 1000
    scripted = {5: 0.1, 10: 0.3, 15: 0.2, 20: 0.3, 25: 0.9}
    validated, steps_taken = [], []
    monkeypatch.setattr(train, "validation_metrics", lambda run, params: validated.append(
        len(steps_taken)) or {"HR@10": scripted[len(steps_taken)]})
    make_step_fn = step.make_step_fn

    def counting_step_fn(*args):
        step_fn = make_step_fn(*args)
        return lambda state, batch: steps_taken.append(1) or step_fn(state, batch)

    monkeypatch.setattr(step, "make_step_fn", counting_step_fn)
    assert _train_loop(config, tmp_path) == (10, 20)
    assert validated == [5, 10, 15, 20] and len(steps_taken) == 20
    kept = {int(d.name) for d in (tmp_path / "checkpoints").iterdir() if d.name.isdigit()}
    assert {10, 20} <= kept  # the best and the last
    validated.clear()
    steps_taken.clear()
    assert _train_loop(config, tmp_path) == (10, 20)
    assert validated == [] and steps_taken == []


def _popularity_reference(data, ks):
    """HR@N and NDCG@N of ranking by training count, from the sequences with numpy: each
    user's last item is the test target, the one before it the validation target, the rest
    is training; the input sequence's items are not ranked, ties count against the target."""
    sequences = [data.items[a:b] for a, b in zip(data.offsets[:-1], data.offsets[1:])]
    counts = np.zeros(data.num_items + 1)
    for sequence in sequences:
        np.add.at(counts, sequence[:-2], 1)
    results = {}
    for split, end in (("valid", -2), ("test", -1)):
        ranks = []
        for sequence in sequences:
            target, seen = sequence[end], set(sequence[:end].tolist())
            ahead = [i for i in range(1, data.num_items + 1)
                     if i != target and i not in seen and counts[i] >= counts[target]]
            ranks.append(1 + len(ahead))
        ranks = np.array(ranks)
        results[split] = {}
        for k in ks:
            results[split][f"HR@{k}"] = np.mean(ranks <= k)
            results[split][f"NDCG@{k}"] = np.mean(np.where(ranks <= k, 1 / np.log2(1 + ranks), 0))
    return results


def test_popularity_baseline_and_its_eval_mode_match_a_numpy_count(tmp_path):
    config = synthetic.get_config("tiny")
    config.model.name = "pop"
    trained = train.train_and_evaluate(config, str(tmp_path))
    evaluated = train.evaluate_checkpoint(config, str(tmp_path))  # --mode=eval
    data = train.build_run(synthetic.get_config("tiny"), str(tmp_path)).data
    want = _popularity_reference(data, config.eval.ks)
    for results in (trained, evaluated):
        assert results["best_step"] == 0
        for split in ("valid", "test"):
            assert results[split] == pytest.approx(want[split], abs=1e-9), split
    assert want["test"]["HR@10"] > 0  # the count ranks some targets in the top 10


def test_a_batch_larger_than_the_training_data_is_refused(tmp_path):
    config = synthetic.get_config("tiny")
    config.train.batch_size = 16384  # the tiny data has 11,251 examples
    with pytest.raises(SineError, match=r"train.batch_size=16384 is larger than the \d+ "
                                        r"training examples"):
        train.build_run(config, str(tmp_path))


@pytest.mark.parametrize("loss_name, negatives", [("full_softmax", 2), ("sampled_softmax", 5)])
def test_forced_sparse_updates_need_sampled_negatives(loss_name, negatives):
    """train.sparse_item_updates=True with the full softmax, or with S >= M negatives (which
    the step turns into the full softmax), touches every row: refused."""
    config = _step_config(sparse_item_updates=True)
    config.loss.name, config.loss.negatives_per_example = loss_name, negatives  # S = 16, 40
    with pytest.raises(SineError, match="train.sparse_item_updates=True needs sampled "
                                        "negatives"):
        step.uses_sparse_updates(config, NUM_ITEMS)
    config.train.sparse_item_updates = None  # the default: dense updates, no error
    assert not step.uses_sparse_updates(config, NUM_ITEMS)
