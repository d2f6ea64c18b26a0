"""make_rank_fn / make_top_fn give the same ranks and lists on (data,) and (data, model) meshes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sine_jax import evaluate, metrics

NUM_ITEMS, ROWS, DIM, USERS, BATCH = 200, 208, 8, 40, 16  # rows 201..207 are pad rows


def _encode(table, history):
    """A stand-in encoder: the user vector is the sum of the history's rows."""
    return table[history].sum(axis=1), table


def _problem():
    rng = np.random.default_rng(0)
    table = rng.integers(-3, 4, (ROWS, DIM)).astype(np.float32)  # exact sums and scores
    table[0] = 0.0
    table[NUM_ITEMS + 1 :] *= 100  # pad rows: the largest scores, were they ranked
    history = rng.integers(0, NUM_ITEMS + 1, (USERS, 5)).astype(np.int32)
    arrays = {
        "history": history,
        "exclude": history,
        "target": rng.integers(1, NUM_ITEMS + 1, USERS).astype(np.int32),
    }
    return table, arrays


def _meshes():
    auto = jax.sharding.AxisType.Auto
    return [
        jax.make_mesh((8,), ("data",), axis_types=(auto,)),
        jax.make_mesh((2, 4), ("data", "model"), axis_types=(auto,) * 2),
    ]


def _params(table, mesh):
    rows = jax.P("model", None) if "model" in mesh.axis_names else jax.P()
    return jax.device_put(table, jax.NamedSharding(mesh, rows))


@pytest.mark.parametrize("mask_history", [True, False])
def test_rank_and_top_fns_agree_across_meshes(mask_history):
    table, arrays = _problem()
    kwargs = {"mask_history": mask_history, "chunk_size": 24, "num_items": NUM_ITEMS}
    users, _ = _encode(table, arrays["history"])
    exclude = arrays["exclude"] if mask_history else None
    want_ranks = metrics.target_ranks(
        users, table, arrays["target"], exclude, num_items=NUM_ITEMS
    )
    want_top = metrics.top_items(users, table, exclude, k=10, num_items=NUM_ITEMS)
    for mesh in _meshes():
        params = _params(table, mesh)
        rank_fn = evaluate.make_rank_fn(_encode, mesh, **kwargs)
        ranks = evaluate.compute_ranks(rank_fn, params, arrays, batch_size=BATCH, mesh=mesh)
        np.testing.assert_array_equal(ranks, want_ranks)
        top_fn = evaluate.make_top_fn(_encode, mesh, k=10, **kwargs)
        top = top_fn(params, arrays["history"], arrays["exclude"])  # all USERS in one batch
        np.testing.assert_array_equal(top, want_top)


def test_interest_diagnostics_average_over_users_in_padded_batches():
    """The batches' padding rows never count; prototypes_used counts distinct prototypes."""
    from sine_jax.models import sine

    users, k = 37, 3
    history = np.ones((users, 4), np.int32)
    history[:, 0] = np.arange(1, users + 1)  # user u's first item is u + 1
    arrays = {"history": history}
    rng = np.random.default_rng(1)
    effective = rng.uniform(1.0, k, users).astype(np.float32)
    used = rng.integers(1, k + 1, users).astype(np.int32)
    protos = rng.integers(0, 9, (users, k)).astype(np.int32)  # of L = 12: 9 usable at most

    def fake_summary(params, hist):  # looks the user up by its first history item
        row = jnp.maximum(hist[:, 0] - 1, 0)  # padding rows (item 0) read user 0
        return sine.InterestSummary(params[0][row], params[1][row], params[2][row])

    mesh = _meshes()[0]
    fn = evaluate.make_interest_fn(fake_summary, mesh)
    params = (effective, used, protos)
    out = evaluate.interest_diagnostics(fn, params, arrays, batch_size=BATCH, mesh=mesh,
                                        num_prototypes=12)
    assert out["effective_k"] == pytest.approx(effective.mean(), rel=1e-6)
    assert out["history_interests"] == pytest.approx(used.mean())
    assert out["prototypes_used"] == len(np.unique(protos)) / 12
