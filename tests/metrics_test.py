"""Ranks and HR/NDCG on hand-computed rankings."""

import jax.numpy as jnp
import numpy as np
import pytest

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


# --- several targets per user ----------------------------------------------------------------


def test_top_items_by_hand():
    table = _table([0.5, 0.9, 0.5, 0.1, 0.7])  # items 1..5
    v = jnp.ones((2, 1))
    exclude = jnp.array([[2, 2, 0], [0, 0, 0]], jnp.int32)
    top = metrics.top_items(v, table, exclude, k=3)
    # User 0 without item 2: 5 (0.7), then the tie 1 and 3 (0.5): lower id first.
    np.testing.assert_array_equal(top, [[5, 1, 3], [2, 5, 1]])
    np.testing.assert_array_equal(metrics.top_items(v, table, k=4, chunk_size=2),
                                  [[2, 5, 1, 3]] * 2)


def test_top_items_fewer_than_k_left():
    table = _table([0.5, 0.9])
    top = metrics.top_items(jnp.ones((1, 1)), table, jnp.array([[1]], jnp.int32), k=3)
    np.testing.assert_array_equal(top, [[2, 0, 0]])


def test_chunked_top_items_equal_unchunked():
    rng = np.random.default_rng(1)
    table = jnp.asarray(rng.normal(size=(1001, 8)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(16, 8)), jnp.float32)
    exclude = jnp.asarray(rng.integers(0, 1001, (16, 30)), jnp.int32)
    full = metrics.top_items(v, table, exclude, k=50, chunk_size=4096)
    chunked = metrics.top_items(v, table, exclude, k=50, chunk_size=97)
    np.testing.assert_array_equal(full, chunked)
    scores = np.array(v @ table.T)
    for b in range(16):
        scores[b, 0] = -np.inf
        scores[b, np.asarray(exclude[b])] = -np.inf
        np.testing.assert_array_equal(full[b], np.argsort(-scores[b], kind="stable")[:50])


def test_multi_target_metrics_by_hand():
    top = np.array([[7, 3, 9, 4],  # targets 3, 4, 8: hits at positions 2 and 4
                    [1, 2, 5, 6],  # target 6: hit at 4
                    [5, 6, 7, 8]])  # targets 1, 2: no hit
    targets = np.array([[3, 4, 8], [6, 0, 0], [2, 1, 0]])
    out = metrics.multi_target_metrics(top, targets, ks=(2, 4))
    g = 1 / np.log2(np.arange(2, 6))  # gains of positions 1..4
    np.testing.assert_allclose(out["Recall@2"], (1 / 3 + 0 + 0) / 3)
    np.testing.assert_allclose(out["Recall@4"], (2 / 3 + 1 + 0) / 3)
    np.testing.assert_allclose(out["HitRate@2"], 1 / 3)
    np.testing.assert_allclose(out["HitRate@4"], 2 / 3)
    # Ideal DCG over min(|targets|, N) positions.
    np.testing.assert_allclose(out["NDCG@2"], (g[1] / (g[0] + g[1])) / 3)
    np.testing.assert_allclose(out["NDCG@4"],
                               ((g[1] + g[3]) / (g[0] + g[1] + g[2]) + g[3] / g[0]) / 3)


def test_multi_target_metrics_duplicate_targets_count_once():
    out = metrics.multi_target_metrics(np.array([[4, 5]]), np.array([[4, 4, 6]]), ks=(2,))
    assert out["Recall@2"] == 0.5 and out["HitRate@2"] == 1.0
    np.testing.assert_allclose(out["NDCG@2"], 1 / (1 + 1 / np.log2(3)))


def test_multi_target_metrics_argument_errors():
    with pytest.raises(ValueError, match="need max\\(ks\\) = 5"):
        metrics.multi_target_metrics(np.ones((1, 2), int), np.ones((1, 1), int), ks=(5,))
    with pytest.raises(ValueError, match="user 1 has no target"):
        metrics.multi_target_metrics(np.ones((2, 2), int), np.array([[1], [0]]), ks=(1,))
