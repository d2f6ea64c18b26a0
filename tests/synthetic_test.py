"""Tests for sine_jax.data.synthetic: shape of the log and planted, learnable structure."""

import itertools

import numpy as np
import pytest

from sine_jax.data import synthetic
from sine_jax.errors import ConfigError


@pytest.fixture(scope="module")
def log():
    return synthetic.generate(seed=0)


def _sequences(interactions):
    bounds = np.flatnonzero(np.diff(interactions.users)) + 1
    return np.split(interactions.items, bounds)


def _hit_rate_at_10(sequences, score_fn):
    """Leave-one-out test HR@10: rank the last item given the rest; history excluded, ties
    count against the target."""
    hits = []
    for sequence in sequences:
        history, target = sequence[:-1], sequence[-1]
        scores = score_fn(history).astype(np.float64)
        scores[0] = -np.inf
        scores[history] = -np.inf
        target_score = scores[target]
        scores[target] = -np.inf
        hits.append(1 + np.sum(scores >= target_score) <= 10)
    return float(np.mean(hits))


def test_shapes_and_ranges(log):
    interactions, metadata = log
    users, items = interactions.users, interactions.items
    assert users.dtype == items.dtype == interactions.timestamps.dtype == np.int64
    np.testing.assert_array_equal(np.unique(users), np.arange(1, 2001))
    assert np.all(np.diff(users) >= 0)
    assert items.min() >= 1 and items.max() <= 1000
    assert len(np.unique(items)) > 950
    assert np.all(np.diff(interactions.timestamps) > 0)
    lengths = np.bincount(users)[1:]
    assert lengths.min() >= 20 and lengths.max() <= 60
    assert len(metadata.titles) == len(metadata.genres) == 1000
    assert metadata.genre_names == tuple(f"cat {c}" for c in range(20))
    sizes = np.bincount([metadata.genre_names.index(g[0]) for g in metadata.genres.values()])
    np.testing.assert_array_equal(sizes, np.full(20, 50))
    category = metadata.genres[17][0]
    assert metadata.titles[17] == f"item 17 ({category})"


def test_users_mix_two_to_four_categories_and_switch(log):
    interactions, metadata = log
    for sequence in _sequences(interactions)[:200]:
        categories = [metadata.genres[int(i)][0] for i in sequence]
        assert 2 <= len(set(categories)) <= 4
        switches = sum(a != b for a, b in itertools.pairwise(categories))
        assert switches >= 1
        assert len(set(sequence.tolist())) >= len(sequence) - 1


def test_deterministic_for_a_seed():
    a, meta_a = synthetic.generate(num_users=50, seed=3)
    b, meta_b = synthetic.generate(num_users=50, seed=3)
    c, _ = synthetic.generate(num_users=50, seed=4)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.users, b.users)
    assert meta_a == meta_b
    assert len(a.items) != len(c.items) or not np.array_equal(a.items, c.items)


def test_popularity_is_weak_and_transitions_are_learnable(log):
    interactions, _ = log
    sequences = _sequences(interactions)
    num_slots = int(interactions.items.max()) + 1
    counts = np.zeros(num_slots)
    transitions = np.zeros((num_slots, num_slots))
    for sequence in sequences:
        train = sequence[:-2]
        np.add.at(counts, train, 1)
        np.add.at(transitions, (train[:-1], train[1:]), 1)
    popularity = _hit_rate_at_10(sequences, lambda history: counts.copy())
    first_order = _hit_rate_at_10(sequences, lambda history: transitions[history[-1]].copy())
    assert popularity <= 0.05
    assert first_order >= 0.3


@pytest.mark.parametrize("kwargs,field", [
    ({"num_categories": 1}, "num_categories"),
    ({"num_items": 30}, "num_items"),
    ({"min_length": 2}, "min_length"),
    ({"max_length": 10}, "max_length"),
    ({"max_categories_per_user": 25}, "max_categories_per_user"),
    ({"jump_prob": 1.5}, "jump_prob"),
])
def test_bad_arguments(kwargs, field):
    with pytest.raises(ConfigError, match=f"data.synthetic.{field}="):
        synthetic.generate(**kwargs)
