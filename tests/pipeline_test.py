"""Tests for sine_jax.data.pipeline: epoch coverage, histories, determinism, resume, eval."""

import itertools

import numpy as np
import pytest

from sine_jax.data import dataset, pipeline, readers
from sine_jax.errors import DataError

# Every item is unique, so a target names its (user, position). Training examples per user:
# len - 3 -> 0 1 4 2 9 27 0 3 2 = 48.
LENGTHS = (3, 4, 7, 5, 12, 30, 3, 6, 5)
NUM_EXAMPLES = 48
N = 4  # history length: shorter than some training sequences, longer than others


@pytest.fixture(scope="module")
def data():
    users = np.repeat(np.arange(1, len(LENGTHS) + 1), LENGTHS)
    items = np.arange(100, 100 + len(users))
    return dataset.preprocess(readers.Interactions(
        users=users, items=items, timestamps=np.arange(len(users)), path="unique"), None)


def _enumeration(data, n):
    """{target: (user, position, expected left-padded history)} for every training example."""
    examples = {}
    for u in range(data.num_users):
        sequence = data.train_sequence(u)
        for t in range(1, len(sequence)):
            history = sequence[max(0, t - n):t]
            padded = np.concatenate([np.zeros(n - len(history), np.int32), history])
            examples[int(sequence[t])] = (u, t, padded)
    return examples


def _targets(iterator, num_batches):
    return np.concatenate([next(iterator)["target"] for _ in range(num_batches)])


def test_num_train_examples(data):
    assert pipeline.num_train_examples(data) == NUM_EXAMPLES == len(_enumeration(data, N))


def test_each_example_once_per_epoch(data):
    examples = _enumeration(data, N)
    iterator = iter(pipeline.make_train_dataset(data, max_seq_len=N, batch_size=8, seed=3))
    epochs = [_targets(iterator, NUM_EXAMPLES // 8) for _ in range(3)]
    for targets in epochs:
        pairs = [examples[int(t)][:2] for t in targets]
        assert len(set(pairs)) == NUM_EXAMPLES
        assert set(pairs) == {v[:2] for v in examples.values()}
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch


def test_batches_straddle_epochs_without_dropping(data):
    # 48 examples, B = 10: the stream carries the remainder into the next batch.
    iterator = iter(pipeline.make_train_dataset(data, max_seq_len=N, batch_size=10, seed=0))
    stream = _targets(iterator, 10)
    assert len(set(stream[:40].tolist())) == 40
    for epoch in range(2):
        assert sorted(stream[48 * epoch:48 * (epoch + 1)]) == sorted(_enumeration(data, N))


def test_histories_static_shapes_and_content(data):
    examples = _enumeration(data, N)
    iterator = iter(pipeline.make_train_dataset(data, max_seq_len=N, batch_size=8, seed=1))
    for _ in range(2 * NUM_EXAMPLES // 8):
        batch = next(iterator)
        assert set(batch) == {"history", "target"}
        assert batch["history"].shape == (8, N) and batch["history"].dtype == np.int32
        assert batch["target"].shape == (8,) and batch["target"].dtype == np.int32
        for history, target in zip(batch["history"], batch["target"]):
            np.testing.assert_array_equal(history, examples[int(target)][2])


def test_seeded_determinism(data):
    def first_batches(seed):
        iterator = iter(pipeline.make_train_dataset(data, max_seq_len=N, batch_size=8,
                                                    seed=seed))
        return [next(iterator) for _ in range(8)]

    a, b, c = first_batches(5), first_batches(5), first_batches(6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["history"], y["history"])
        np.testing.assert_array_equal(x["target"], y["target"])
    assert not all(np.array_equal(x["target"], y["target"]) for x, y in zip(a, c))


@pytest.mark.parametrize("consumed", [0, 3, 5, 13])
def test_get_state_set_state_resumes_exactly(data, consumed):
    ds = pipeline.make_train_dataset(data, max_seq_len=N, batch_size=8, seed=2)
    iterator = iter(ds)
    for _ in range(consumed):
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(8)]  # crosses an epoch boundary (6 per epoch)
    for _ in range(4):
        next(iterator)
    iterator.set_state(state)
    fresh = iter(ds)
    fresh.set_state(state)
    for it in (iterator, fresh):
        for want in expected:
            got = next(it)
            np.testing.assert_array_equal(got["history"], want["history"])
            np.testing.assert_array_equal(got["target"], want["target"])


@pytest.mark.parametrize("hosts", [2, 4])
def test_each_host_reads_only_its_rows_and_together_they_read_the_global_batch(data, hosts):
    """A multi-process run: host h of P materialises B / P examples per step, rows
    h*B/P .. (h+1)*B/P - 1 of the global batch; the hosts' rows, stacked, are the batch a
    single process reads, step after step (across epochs), and each host resumes exactly."""
    batch, steps = 8, 14  # 6 batches per epoch: over two epoch boundaries
    whole = list(itertools.islice(
        iter(pipeline.make_train_dataset(data, max_seq_len=N, batch_size=batch, seed=3)), steps))
    share = batch // hosts
    iterators = [iter(pipeline.make_train_dataset(
        data, max_seq_len=N, batch_size=batch, seed=3, rows=(h * share, (h + 1) * share)))
        for h in range(hosts)]
    for step in range(steps):
        parts = [next(it) for it in iterators]
        assert all(p["history"].shape == (share, N) and p["target"].shape == (share,)
                   for p in parts)
        for name in ("history", "target"):
            np.testing.assert_array_equal(np.concatenate([p[name] for p in parts]),
                                          whole[step][name])
        if step == 4:  # a host's state, restored into a fresh iterator, continues its rows
            state = iterators[-1].get_state()
            resumed = iter(pipeline.make_train_dataset(
                data, max_seq_len=N, batch_size=batch, seed=3, rows=(batch - share, batch)))
            resumed.set_state(state)
            np.testing.assert_array_equal(next(resumed)["target"], whole[5]["target"][-share:])
    with pytest.raises(ValueError, match="rows"):
        pipeline.make_train_dataset(data, max_seq_len=N, batch_size=batch, seed=3, rows=(4, 9))


@pytest.mark.parametrize("split", pipeline.SPLITS)
def test_eval_arrays(data, split):
    arrays = pipeline.eval_arrays(data, split, max_seq_len=N)
    lengths = np.array(LENGTHS)
    input_lengths = lengths - (2 if split == "valid" else 1)
    num_users = len(LENGTHS)
    assert arrays["history"].shape == (num_users, N)
    assert arrays["target"].shape == (num_users,)
    assert arrays["exclude"].shape == (num_users, input_lengths.max())
    assert all(a.dtype == np.int32 for a in arrays.values())
    for u in range(num_users):
        sequence = data.items[data.offsets[u]:data.offsets[u + 1]]
        inputs = sequence[:input_lengths[u]]
        target = data.valid_target(u) if split == "valid" else data.test_target(u)
        assert arrays["target"][u] == target == sequence[input_lengths[u]]
        last = inputs[-N:]
        np.testing.assert_array_equal(arrays["history"][u, N - len(last):], last)
        assert np.all(arrays["history"][u, :N - len(last)] == 0)
        exclude = arrays["exclude"][u]
        np.testing.assert_array_equal(exclude[:len(inputs)], inputs)  # the full input
        assert np.all(exclude[len(inputs):] == 0)
        assert target not in exclude


def test_argument_errors(data):
    with pytest.raises(ValueError, match="split='train'"):
        pipeline.eval_arrays(data, "train", max_seq_len=N)
    with pytest.raises(ValueError, match="max_seq_len"):
        pipeline.eval_arrays(data, "valid", max_seq_len=0)
    with pytest.raises(ValueError, match="batch_size >= 1"):
        pipeline.make_train_dataset(data, max_seq_len=N, batch_size=0, seed=0)


def test_no_training_examples():
    users = np.repeat([1, 2], 3)
    short = dataset.preprocess(readers.Interactions(
        users=users, items=np.arange(6), timestamps=np.arange(6), path="x"), None)
    assert pipeline.num_train_examples(short) == 0
    with pytest.raises(DataError, match="x: no training examples"):
        pipeline.make_train_dataset(short, max_seq_len=N, batch_size=2, seed=0)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 48, 1000, 4097, 65_537])
def test_permute_is_a_bijection(n):
    index = np.arange(n)
    perms = [pipeline.permute(index, n, seed, epoch)
             for seed, epoch in itertools.product((0, 9), (0, 1))]
    for perm in perms:
        np.testing.assert_array_equal(np.sort(perm), index)
    if n >= 48:
        assert len({p.tobytes() for p in perms}) == 4
        assert abs(np.corrcoef(index, perms[0])[0, 1]) < 0.3


def test_synthetic_batches(tmp_path):
    data = dataset.load_dataset({"format": "synthetic", "synthetic": {"num_users": 200}}, None)
    iterator = iter(pipeline.make_train_dataset(data, max_seq_len=20, batch_size=128, seed=0))
    for _ in range(5):
        batch = next(iterator)
        assert batch["history"].shape == (128, 20)
        assert np.all(batch["history"][:, -1] > 0)  # position t >= 1: never an empty history
        assert np.all((batch["target"] >= 1) & (batch["target"] <= data.num_items))


# --- held-out users ---------------------------------------------------------------------------

HELD_OUT_LENGTHS = (2, 3, 5, 10, 7, 4, 6, 8, 9, 11)


@pytest.fixture(scope="module")
def held_out():
    """10 users (8 train, 1 valid, 1 test); items unique except the planted repeats below."""
    users = np.repeat(np.arange(1, 11), HELD_OUT_LENGTHS)
    items = np.arange(100, 100 + len(users))
    data = dataset.preprocess(readers.Interactions(
        users=users, items=items, timestamps=np.arange(len(users)), path="h"), None,
        split="held_out_users", min_user_interactions=2, split_seed=0)
    return data


def test_held_out_training_examples(held_out):
    train = held_out.user_split == dataset.TRAIN
    lengths = np.array(HELD_OUT_LENGTHS)
    assert pipeline.num_train_examples(held_out) == int(np.sum(lengths[train] - 1))
    iterator = iter(pipeline.make_train_dataset(held_out, max_seq_len=N, batch_size=4, seed=0))
    targets = _targets(iterator, pipeline.num_train_examples(held_out) // 4)
    owners = np.searchsorted(held_out.offsets, np.concatenate(
        [np.flatnonzero(held_out.items == t) for t in targets]), side="right") - 1
    assert set(owners) <= set(np.flatnonzero(train))


@pytest.mark.parametrize("split,group", [("valid", dataset.VALID), ("test", dataset.TEST)])
def test_held_out_eval_arrays(held_out, split, group):
    arrays = pipeline.eval_arrays(held_out, split, max_seq_len=N)
    (user,) = np.flatnonzero(held_out.user_split == group)
    np.testing.assert_array_equal(arrays["users"], [user])
    sequence = held_out.items[held_out.offsets[user]:held_out.offsets[user + 1]]
    k = int(len(sequence) * 0.8)
    inputs, targets = sequence[:k], sequence[k:]
    history = arrays["history"][0]
    np.testing.assert_array_equal(history[N - min(N, k):], inputs[-N:])
    np.testing.assert_array_equal(arrays["targets"][0], targets)
    assert arrays["target_mask"].all() and arrays["targets"].shape == (1, len(targets))
    np.testing.assert_array_equal(arrays["exclude"][0], inputs)
    assert set(arrays) == {"history", "targets", "target_mask", "exclude", "users"}


def test_held_out_targets_deduplicated_and_not_excluded():
    # Users 0..9 ascending; seed 0 puts users 8 (valid) and 1 (test) aside (checked below).
    sequences = {u: list(range(10 * u + 1, 10 * u + 6)) for u in range(10)}
    sequences[8] = [5, 6, 5, 7, 8, 9, 6, 9, 9, 5]  # input 5 6 5 7 8 9 6 9; targets 9 5
    sequences[1] = [1, 2]  # input 1; target 2
    users = np.concatenate([[u] * len(s) for u, s in sequences.items()])
    items = np.concatenate(list(sequences.values()))
    data = dataset.preprocess(readers.Interactions(
        users=users, items=items, timestamps=np.arange(len(users)), path="d"), None,
        split="held_out_users", min_user_interactions=2, split_seed=0)
    assert np.flatnonzero(data.user_split == dataset.VALID).tolist() == [8]
    assert np.flatnonzero(data.user_split == dataset.TEST).tolist() == [1]
    raw = data.item_raw_ids
    valid = pipeline.eval_arrays(data, "valid", max_seq_len=3)
    assert raw[valid["targets"][0]].tolist() == [9, 5]
    assert raw[valid["exclude"][0]].tolist() == [6, 7, 8, 6]  # the input without 5 and 9
    assert raw[valid["history"][0]].tolist() == [9, 6, 9]
    test = pipeline.eval_arrays(data, "test", max_seq_len=3)
    assert raw[test["history"][0]].tolist() == [-1, -1, 1]
    assert raw[test["targets"][0]].tolist() == [2]
