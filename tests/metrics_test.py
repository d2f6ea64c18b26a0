"""Ranks and HR/NDCG on hand-computed rankings; sharded ranks and top-k equal unsharded ones."""

import jax
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


def test_num_items_leaves_pad_rows_out():
    table = _table([0.5, 0.9, 0.5, 5.0, 6.0])  # items 1..3, then two pad rows scoring highest
    v = jnp.ones((1, 1))
    np.testing.assert_array_equal(metrics.top_items(v, table, k=4, num_items=3), [[2, 1, 3, 0]])
    ranks = metrics.target_ranks(v, table, jnp.array([1], jnp.int32), num_items=3)
    np.testing.assert_array_equal(ranks, [3])  # ahead: 2 and the tie 3, not the pad rows
    with pytest.raises(ValueError, match="num_items=6"):
        metrics.top_items(v, table, k=1, num_items=6)


# --- an item table sharded over 'model' --------------------------------------------------------

NUM_ITEMS, ROWS, BATCH, DIM, K = 300, 320, 16, 8, 50  # rows 301..319 are pad rows
MESH_SHAPES = [(1, 8), (2, 4), (4, 2), (8, 1)]
# Jitted, as evaluate calls them (eager shard_map is several times slower to run here).
_ranks = jax.jit(metrics.target_ranks, static_argnames=("num_items", "chunk_size"))
_sharded_ranks = jax.jit(
    metrics.sharded_target_ranks, static_argnames=("mesh", "num_items", "chunk_size")
)
_top = jax.jit(metrics.top_items, static_argnames=("k", "num_items", "chunk_size"))
_sharded_top = jax.jit(
    metrics.sharded_top_items, static_argnames=("mesh", "k", "num_items", "chunk_size")
)


def _mesh(data, model):
    return jax.make_mesh(
        (data, model), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2
    )


def _integer_problem(seed=0):
    """Integer-valued vectors (exact scores, so many exact ties) with duplicated item rows.

    Every user vector starts with 3 and the padding row and pad rows are [100, 0, ...]: they
    outscore every item.
    """
    rng = np.random.default_rng(seed)
    distinct = rng.integers(-2, 3, (40, DIM))
    table = np.zeros((ROWS, DIM), np.float32)
    table[1 : NUM_ITEMS + 1] = distinct[rng.integers(0, 40, NUM_ITEMS)]
    table[0, 0] = table[NUM_ITEMS + 1 :, 0] = 100.0
    users = rng.integers(-2, 3, (BATCH, DIM)).astype(np.float32)
    users[:, 0] = 3.0
    targets = rng.integers(1, NUM_ITEMS + 1, BATCH).astype(np.int32)
    exclude = rng.integers(0, NUM_ITEMS + 1, (BATCH, 12)).astype(np.int32)
    exclude[:, :2] = exclude[:, 2:4]  # duplicates
    exclude[::3, 4] = targets[::3]  # the target in the history
    exclude[:, -2:] = 0  # padding
    return users, table, targets, exclude


def _reference(users, table, targets, exclude):
    """numpy ranks [B] and top-K lists [B, K] over items 1..NUM_ITEMS (lower id first on ties)."""
    scores = users.astype(np.float64) @ table.T.astype(np.float64)  # [B, ROWS]
    scores[:, 0] = scores[:, NUM_ITEMS + 1 :] = -np.inf
    target_scores = scores[np.arange(BATCH), targets]
    ranks, tops = [], []
    for b in range(BATCH):
        row = scores[b].copy()
        row[exclude[b]] = -np.inf
        row[targets[b]] = -np.inf  # the target never counts against itself
        ranks.append(1 + np.sum(row >= target_scores[b]))
        row = scores[b].copy()
        row[exclude[b]] = -np.inf
        tops.append(np.argsort(-row, kind="stable")[:K])
    return np.array(ranks), np.array(tops)


def _shard(mesh, users, table, *batch_arrays):
    """Users and their arrays over 'data', the table's rows over 'model'."""
    by_data = jax.NamedSharding(mesh, jax.P("data"))
    table = jax.device_put(table, jax.NamedSharding(mesh, jax.P("model", None)))
    return (jax.device_put(users, by_data), table,
            *(jax.device_put(x, by_data) for x in batch_arrays))


@pytest.mark.parametrize("data,model", MESH_SHAPES)
def test_sharded_equals_unsharded_and_numpy_with_ties_and_pad_rows(data, model):
    users, table, targets, exclude = _integer_problem()
    want_ranks, want_top = _reference(users, table, targets, exclude)
    mesh = _mesh(data, model)
    sharded = _shard(mesh, users, table, targets, exclude)
    kwargs = {"num_items": NUM_ITEMS, "chunk_size": 24}  # chunks straddle the shard ends
    np.testing.assert_array_equal(_ranks(users, table, targets, exclude, **kwargs), want_ranks)
    np.testing.assert_array_equal(_sharded_ranks(*sharded, mesh=mesh, **kwargs), want_ranks)
    np.testing.assert_array_equal(_top(users, table, exclude, k=K, **kwargs), want_top)
    u, t, _, e = sharded
    np.testing.assert_array_equal(_sharded_top(u, t, e, mesh=mesh, k=K, **kwargs), want_top)


@pytest.mark.parametrize("data,model", MESH_SHAPES)
def test_sharded_equals_unsharded_on_float_scores(data, model):
    """Random floats; items 151..300 repeat items 1..150, so every target has an exact twin."""
    rng = np.random.default_rng(data)
    half = NUM_ITEMS // 2
    table = rng.normal(size=(ROWS, DIM)).astype(np.float32)
    table[half + 1 : NUM_ITEMS + 1] = table[1 : half + 1]
    users = rng.normal(size=(BATCH, DIM)).astype(np.float32)
    targets = rng.integers(1, half + 1, BATCH).astype(np.int32)
    twins = (targets + half)[:, None]  # [B, 1]
    mesh = _mesh(data, model)
    u, t, tg, tw = _shard(mesh, users, table, targets, twins)
    kwargs = {"num_items": NUM_ITEMS, "chunk_size": 32}
    ranks = {}
    for name, exclude, sharded_exclude in [("all", None, None), ("no twin", twins, tw)]:
        ranks[name] = _ranks(users, table, targets, exclude, **kwargs)
        np.testing.assert_array_equal(
            _sharded_ranks(u, t, tg, sharded_exclude, mesh=mesh, **kwargs), ranks[name]
        )
        top = _sharded_top(u, t, sharded_exclude, mesh=mesh, k=K, **kwargs)
        np.testing.assert_array_equal(top, _top(users, table, exclude, k=K, **kwargs))
        assert top.max() <= NUM_ITEMS and top.min() > 0
    # The twin scores exactly as the target does, so it always ties against the target.
    np.testing.assert_array_equal(ranks["all"] - ranks["no twin"], 1)


@pytest.mark.parametrize("data,model", [(1, 1), (4, 2)])
def test_several_queries_per_user_rank_by_their_best_score(data, model):
    """K queries per user (multi-interest retrieval): an item scores its best of the K, and the
    top list equals merging the K per-query top lists by score."""
    _, table, targets, exclude = _integer_problem(seed=3)
    rng = np.random.default_rng(4)
    queries = rng.integers(-2, 3, (BATCH, 3, DIM)).astype(np.float32)
    queries[:, :, 0] = 3.0
    scores = np.einsum("bkd,rd->bkr", queries, table).max(axis=1)  # [B, ROWS]
    # A single query with the best-of-K scores is the numpy reference: table' = I, users' = scores.
    want_ranks, want_top = _reference(scores, np.eye(ROWS, dtype=np.float32), targets, exclude)
    merged = []
    for b in range(BATCH):
        candidates = {}
        for k in range(3):
            row = queries[b, k] @ table.T
            row[0] = row[NUM_ITEMS + 1 :] = -np.inf
            row[exclude[b]] = -np.inf
            for item in np.argsort(-row, kind="stable")[:K]:
                candidates[item] = max(candidates.get(item, -np.inf), row[item])
        merged.append(sorted(candidates, key=lambda i: (-candidates[i], i))[:K])
    np.testing.assert_array_equal(want_top, np.array(merged))
    mesh = _mesh(data, model)
    q, t, tg, e = _shard(mesh, queries, table, targets, exclude)
    kwargs = {"num_items": NUM_ITEMS, "chunk_size": 24}
    np.testing.assert_array_equal(_sharded_ranks(q, t, tg, e, mesh=mesh, **kwargs), want_ranks)
    np.testing.assert_array_equal(_sharded_top(q, t, e, mesh=mesh, k=K, **kwargs), want_top)
    np.testing.assert_array_equal(_ranks(queries, table, targets, exclude, **kwargs), want_ranks)


@pytest.mark.parametrize("data,model", [(1, 1), (2, 4)])
def test_nan_scores_are_never_hits(data, model):
    """A NaN user vector (every score NaN), a NaN target row, a NaN row of another item and a
    NaN among K queries: NaN ranks as -inf, behind every item, and is never in a top list."""
    rng = np.random.default_rng(5)
    table = rng.normal(size=(ROWS, DIM)).astype(np.float32)
    users = rng.normal(size=(BATCH, DIM)).astype(np.float32)
    targets = rng.integers(1, NUM_ITEMS + 1, BATCH).astype(np.int32)
    targets[2] = 7
    exclude = np.zeros((BATCH, 1), np.int32)
    finite_users, finite_table = users.copy(), table.copy()
    users[0] = np.nan  # every score of user 0
    table[7] = np.nan  # user 2's target; an ordinary item for the others
    kwargs = {"num_items": NUM_ITEMS, "chunk_size": 24}
    mesh = _mesh(data, model)
    sharded = _shard(mesh, users, table, targets, exclude)
    ranks = np.asarray(_sharded_ranks(*sharded, mesh=mesh, **kwargs) if model > 1
                       else _ranks(users, table, targets, exclude, **kwargs))
    assert ranks[0] == ranks[2] == NUM_ITEMS  # last: every other item is ahead
    # For the other users item 7 scores NaN: it is behind their target, never ahead.
    for b in set(range(BATCH)) - {0, 2}:
        scores = table.astype(np.float64) @ users[b]
        ahead = [i for i in range(1, NUM_ITEMS + 1)
                 if i not in (7, targets[b]) and scores[i] >= scores[targets[b]]]
        assert ranks[b] == 1 + len(ahead), b
    top = np.asarray(_sharded_top(sharded[0], sharded[1], sharded[3], mesh=mesh, k=K, **kwargs)
                     if model > 1 else _top(users, table, exclude, k=K, **kwargs))
    np.testing.assert_array_equal(top[0], 0)  # no item has a score
    assert 7 not in top
    # K queries of which one is NaN: the item takes the best of the finite ones.
    queries = np.stack([finite_users, np.full_like(finite_users, np.nan)], axis=1)
    np.testing.assert_array_equal(
        _ranks(queries, finite_table, targets, exclude, **kwargs),
        _ranks(finite_users, finite_table, targets, exclude, **kwargs))
    assert metrics.rank_metrics(ranks[[0, 2]], ks=(10,))["HR@10"] == 0.0


def test_sharded_top_items_fewer_than_k_left():
    table = np.zeros((8, 1), np.float32)
    table[1:4, 0] = [0.5, 0.9, 0.5]  # items 1..3; rows 4..7 pad rows
    mesh = _mesh(2, 4)
    u, t, e = _shard(mesh, np.ones((2, 1), np.float32), table, np.array([[1], [0]], np.int32))
    top = _sharded_top(u, t, e, mesh=mesh, k=4, num_items=3, chunk_size=2)
    np.testing.assert_array_equal(top, [[2, 3, 0, 0], [2, 1, 3, 0]])


def test_sharded_rows_must_divide_over_model():
    mesh = _mesh(2, 4)
    with pytest.raises(ValueError, match="not a multiple of the 'model' axis size 4"):
        _sharded_top(jnp.ones((2, 1)), jnp.ones((6, 1)), mesh=mesh, k=1)


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
