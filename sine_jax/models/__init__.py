"""The user encoders, one module each, and the registry `config.model.name` picks from.

  layers.py      what every model shares (item table start, masked softmax, readout)
  sine.py        SINE, eqs 1-8 of the paper, and its ablations SINE-cate and SINE-label
  gru4rec.py  caser.py  sasrec.py  mind.py  mcprn.py  comirec_sa.py   the baselines

An encoder is an `nnx.Module` with
  * `item_embedding`: nnx.Param [R, D], the item table (row 0 = padding, rows past M = pad
    rows), shared by the input and the output side, started by `layers.init_item_table`;
  * `encode(history int32 [B, n]) -> [B, D]` one query per user, or `[B, K, D]` for the
    multi-interest retrievers (mind, comirec_sa, sine_label): at training one query per
    example is read out against the target (`training_query`), at inference each interest
    retrieves items and the lists are merged by score, i.e. an item scores max_k q_k . h;
and optionally
  * `label_aware_query(interests [B, K, D], target_rows [B, D], history [B, n]) -> [B, D]`,
    a multi-interest retriever's own training readout (MIND: its power p and active
    interests); without it, the interest nearest the target (`layers.label_aware_readout`);
  * `item_vectors(rows [..., D]) -> [..., D']`, what the queries score for item rows when it
    is not the rows themselves (MCPRN: the rows weighted by their purposes, D' = K D).
Histories are left-padded with 0 (most recent item at n - 1); an encoder reads the table
through `self.item_embedding` only (the train step may swap in the rows a batch touches).

`pop` has no encoder: it ranks by training counts (`evaluate.popularity_queries_and_table`).
"""

from collections.abc import Callable

import jax
import numpy as np
from flax import nnx

from sine_jax.errors import ConfigError
from sine_jax.models import caser, comirec_sa, gru4rec, layers, mcprn, mind, sasrec, sine
from sine_jax.models.layers import require_int

# (model_config, num_items, rngs, *, table_rows, item_categories) -> the encoder.
Builder = Callable[..., nnx.Module]


def _baseline(encoder: type[nnx.Module]) -> Builder:
    """The builder of a baseline: checks the shared fields, then `encoder(...)`."""

    def build(model_config, num_items: int, rngs: nnx.Rngs, *, table_rows: int | None,
              item_categories: np.ndarray | None) -> nnx.Module:
        del item_categories  # SINE-cate's only
        for field in ("embed_dim", "max_seq_len", "num_interests"):
            require_int(field, model_config.get(field), 1)
        table_rows = num_items + 1 if table_rows is None else table_rows
        return encoder(
            num_items=num_items, table_rows=table_rows, model_config=model_config, rngs=rngs
        )

    return build


# name -> builder of the trained encoders; `pop` is the untrained floor.
ENCODERS: dict[str, Builder] = {
    "gru4rec": _baseline(gru4rec.GRU4Rec),
    "caser": _baseline(caser.Caser),
    "sasrec": _baseline(sasrec.SASRec),
    "mind": _baseline(mind.MIND),
    "mcprn": _baseline(mcprn.MCPRN),
    "comirec_sa": _baseline(comirec_sa.ComiRecSA),
    **{name: sine.build_model for name in sine.SINE_NAMES},
}
MODEL_NAMES = ("pop", *ENCODERS)
# Encoders that read every row of the item table each step (SINE-cate's category prototypes
# average it), so they cannot train on the gathered rows of row-sparse Adam.
WHOLE_TABLE_MODELS = ("sine_cate",)


def dense_table_reason(model_config) -> str | None:
    """Why row-sparse item updates cannot train this model (None when they can): it reads the
    whole item table each step, or it looks the history up in a second table of its own."""
    name = model_config.get("name", "sine")
    if name in WHOLE_TABLE_MODELS:
        return "it reads the whole item table each step"
    if name in sine.SINE_NAMES and model_config.get("input_table") == "separate":
        return "model.input_table='separate' looks the history up in a second table"
    return None


def build_model(
    model_config, num_items: int, rngs: nnx.Rngs, *, table_rows: int | None = None,
    item_categories: np.ndarray | None = None,
) -> nnx.Module:
    """Validates `config.model` and builds the encoder it names.

    Args:
        model_config: `config.model`.
        num_items: M, the number of real items (ids 1..M).
        rngs: parameter RNG streams.
        table_rows: rows of the item table, >= M + 1 (default M + 1; see `sine.build_model`).
        item_categories: int [M + 1] each item's category (-1 = none), for SINE-cate.

    Raises:
        ConfigError: an unknown name (or `pop`, which has no encoder) or a bad field.
    """
    name = model_config.get("name", "sine")
    if name not in ENCODERS:
        hint = "; 'pop' ranks by popularity and builds no model" if name == "pop" else ""
        raise ConfigError(f"model.name={name!r} must be one of {tuple(ENCODERS)}{hint}")
    return ENCODERS[name](
        model_config, num_items, rngs, table_rows=table_rows, item_categories=item_categories
    )


def training_query(
    model: nnx.Module, queries: jax.Array, target_rows: jax.Array, history: jax.Array
) -> jax.Array:
    """The query the loss scores for each example: `encode`'s [B, D] as it is; of K queries
    [B, K, D], the model's `label_aware_query`, else the one nearest the target.

    Args:
        model: the encoder that gave `queries`.
        queries: [B, D] or [B, K, D] from `model.encode(history)`.
        target_rows: [B, D] the targets' rows of the item table.
        history: int32 [B, n] the histories that were encoded (0 = padding).

    Returns:
        [B, D].
    """
    if queries.ndim == 2:
        return queries
    readout = getattr(model, "label_aware_query", None)
    if readout is None:
        return layers.label_aware_readout(queries, target_rows)
    return readout(queries, target_rows, history)


def item_vectors(model: nnx.Module, rows: jax.Array) -> jax.Array:
    """What `model`'s queries score for item rows [..., D]: its `item_vectors(rows)`, else
    the rows themselves. Row by row, so it applies to the whole table or to gathered rows."""
    transform = getattr(model, "item_vectors", None)
    return rows if transform is None else transform(rows)
