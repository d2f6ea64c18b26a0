"""Ranks and HR/NDCG on hand-computed rankings."""

import jax.numpy as jnp
import numpy as np

from sine_jax import metrics


def _table(scores):
    """An item table whose inner product with the user vector [1] is `scores` (row 0 pad)."""
    return jnp.asarray(np.array([0.0] + list(scores), np.float32)[:, None])


def test_rank_by_hand_with_ties_against_target():
    table = _table([0.5, 0.9, 0.5, 0.1, 0.7])  # items 1..5
    v = jnp.ones((3, 1))
    targets = jnp.array([1, 2, 4], jnp.int32)
    ranks = metrics.target_ranks(v, table, targets)
    # item 1 (0.5): ahead are 2 (0.9), 5 (0.7) and the tie 3 (0.5) -> rank 4.
    np.testing.assert_array_equal(ranks, [4, 1, 5])


def test_rank_excludes_history_but_never_the_target():
    table = _table([0.5, 0.9, 0.5, 0.1, 0.7])
    v = jnp.ones((2, 1))
    targets = jnp.array([1, 1], jnp.int32)
    exclude = jnp.array([[2, 2, 1, 0], [0, 0, 0, 0]], jnp.int32)  # dupes, target, padding
    ranks = metrics.target_ranks(v, table, targets, exclude)
    np.testing.assert_array_equal(ranks, [3, 4])


def test_chunked_ranks_equal_unchunked():
    rng = np.random.default_rng(0)
    table = jnp.asarray(rng.normal(size=(1001, 8)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(16, 8)), jnp.float32)
    targets = jnp.asarray(rng.integers(1, 1001, 16), jnp.int32)
    exclude = jnp.asarray(rng.integers(0, 1001, (16, 30)), jnp.int32)
    full = metrics.target_ranks(v, table, targets, exclude, chunk_size=4096)
    chunked = metrics.target_ranks(v, table, targets, exclude, chunk_size=97)
    np.testing.assert_array_equal(full, chunked)
    scores = np.asarray(v @ table.T)
    for b in range(16):
        t = int(targets[b])
        banned = set(np.asarray(exclude[b]).tolist()) - {t}
        better = [
            i for i in range(1, 1001)
            if i != t and i not in banned and scores[b, i] >= scores[b, t]
        ]
        assert full[b] == len(better) + 1


def test_rank_metrics_by_hand():
    out = metrics.rank_metrics(np.array([1, 3, 11, 60]), ks=(10, 50))
    assert out["HR@10"] == 0.5
    assert out["HR@50"] == 0.75
    np.testing.assert_allclose(out["NDCG@10"], (1.0 + 1 / np.log2(4)) / 4)
    np.testing.assert_allclose(out["NDCG@50"], (1.0 + 1 / np.log2(4) + 1 / np.log2(12)) / 4)
