"""Which user encoder `config.model.name` builds, and what every encoder provides.

An encoder is an `nnx.Module` with
  * `item_embedding`: nnx.Param [R, D], the item table (row 0 = padding, rows past M = pad
    rows), shared by the input and the output side, started by `model.init_item_table`;
  * `encode(history int32 [B, n]) -> [B, D]` one query per user, or `[B, K, D]` for the
    multi-interest retrievers (mind, comirec_sa, sine_label): at training the interest
    closest to the target is used (`label_aware_readout`), at inference each interest
    retrieves items and the lists are merged by score, i.e. an item scores max_k q_k . h.
Histories are left-padded with 0 (most recent item at n - 1); an encoder reads the table
through `self.item_embedding` only (the train step may swap in the rows a batch touches).

`pop` has no encoder: it ranks by training counts (`evaluate.popularity_metrics`).
"""

import importlib

import jax
import jax.numpy as jnp
from flax import nnx

from sine_jax.errors import ConfigError

# name -> (module, class) of the trained encoders; `pop` is the untrained floor.
ENCODERS = {
    "gru4rec": ("sine_jax.baselines.gru4rec", "GRU4Rec"),
    "caser": ("sine_jax.baselines.caser", "Caser"),
    "sasrec": ("sine_jax.baselines.sasrec", "SASRec"),
    "mind": ("sine_jax.baselines.mind", "MIND"),
    "mcprn": ("sine_jax.baselines.mcprn", "MCPRN"),
    "comirec_sa": ("sine_jax.baselines.comirec_sa", "ComiRecSA"),
    "sine": ("sine_jax.model", "SINE"),
    "sine_cate": ("sine_jax.model", "SINE"),
    "sine_label": ("sine_jax.model", "SINE"),
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
    sine = ENCODERS.get(name, ("",))[0] == "sine_jax.model"
    if sine and model_config.get("input_table") == "separate":
        return "model.input_table='separate' looks the history up in a second table"
    return None


class Constant(nnx.Variable):
    """A fixed array of a model (e.g. MIND's routing-logit start, SINE-cate's item categories):
    never trained nor checkpointed; rebuilt from the config, the seed and the data."""


def require_int(field: str, value, minimum: int) -> int:
    """`value` if it is an integer >= minimum, else ConfigError naming model.<field>."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"model.{field}={value!r} must be an integer >= {minimum}")
    return value


def label_aware_readout(interests: jax.Array, target_rows: jax.Array) -> jax.Array:
    """MIND's label-aware attention with p -> infinity (as ComiRec's public code): each example
    is scored by the interest whose dot product with its target embedding is largest.

    Args:
        interests: [B, K, D].
        target_rows: [B, D] the targets' item embeddings.

    Returns:
        [B, D] the chosen interest per example (its gradient flows to that interest only).
    """
    scores = jnp.einsum("bkd,bd->bk", interests, target_rows)
    chosen = jnp.argmax(jax.lax.stop_gradient(scores), axis=-1)  # [B]
    return jnp.take_along_axis(interests, chosen[:, None, None], axis=1)[:, 0]


def build_model(
    model_config, num_items: int, rngs: nnx.Rngs, *, table_rows: int | None = None,
    item_categories=None,
) -> nnx.Module:
    """Validates `config.model` and builds the encoder it names.

    Args:
        model_config: `config.model`.
        num_items: M, the number of real items (ids 1..M).
        rngs: parameter RNG streams.
        table_rows: rows of the item table, >= M + 1 (default M + 1; see `model.build_model`).
        item_categories: int [M + 1] each item's category (-1 = none), for SINE-cate.

    Raises:
        ConfigError: an unknown name (or `pop`, which has no encoder) or a bad field.
    """
    name = model_config.get("name", "sine")
    if name not in ENCODERS:
        hint = "; 'pop' ranks by popularity and builds no model" if name == "pop" else ""
        raise ConfigError(f"model.name={name!r} must be one of {tuple(ENCODERS)}{hint}")
    from sine_jax import model as sine_model  # (imports this module)

    if name in sine_model.SINE_NAMES:
        return sine_model.build_model(
            model_config, num_items, rngs, table_rows=table_rows, item_categories=item_categories
        )
    for field in ("embed_dim", "max_seq_len", "num_interests"):
        require_int(field, model_config.get(field), 1)
    table_rows = num_items + 1 if table_rows is None else table_rows
    module, cls = ENCODERS[name]
    encoder = getattr(importlib.import_module(module), cls)
    return encoder(num_items=num_items, table_rows=table_rows, model_config=model_config, rngs=rngs)
