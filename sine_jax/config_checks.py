"""Checks of a config before anything is built or compiled: one-line ConfigErrors."""

import math
import numbers
from collections.abc import Iterator
from typing import Any

import jax
from ml_collections import config_dict

from sine_jax.data import dataset
from sine_jax.errors import ConfigError
from sine_jax.models import MODEL_NAMES, dense_table_reason
from sine_jax.sharding import mesh_shape

LOSS_NAMES = ("sampled_softmax", "full_softmax")
LR_DECAYS = ("constant", "cosine")
ON_BAD_ROW = ("error", "skip")
ON_NONFINITE = ("stop", "skip")
COMPUTE_DTYPES = ("float32", "bfloat16")


def _choice(value, field: str, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{field}={value!r} is not one of {', '.join(map(str, allowed))}")


def _at_least(value, field: str, minimum) -> None:
    if value < minimum:
        raise ConfigError(f"{field}={value} must be >= {minimum}")


SEED_RANGE = 2**32  # seeds are integers in [0, 2**32)


def _fields(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted name, value) of every field of a config, nested groups walked."""
    for key, value in node.items():
        if isinstance(value, (config_dict.ConfigDict, dict)):
            yield from _fields(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def check_values(config: config_dict.ConfigDict) -> None:
    """Checks every field by its kind, so that fields added later are covered too: a float
    (alone or in a tuple) must be finite, a seed (`seed`, `*_seed`) an integer in
    [0, 2**32).

    Raises:
        ConfigError: naming the first bad field.
    """
    for name, value in _fields(config):
        values = value if isinstance(value, (tuple, list)) else (value,)
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{name}={value!r} must be a finite number")
        leaf = name.rsplit(".", 1)[-1]
        if (leaf == "seed" or leaf.endswith("_seed")) and not (
            isinstance(value, numbers.Integral) and not isinstance(value, bool)
            and 0 <= value < SEED_RANGE
        ):
            raise ConfigError(f"{name}={value!r} must be an integer in [0, 2**32)")


def check_config(config: config_dict.ConfigDict, num_devices: int | None = None) -> None:
    """Raises ConfigError naming the first bad field and its allowed values."""
    num_devices = jax.device_count() if num_devices is None else num_devices
    check_values(config)
    _choice(config.model.name, "model.name", MODEL_NAMES)
    _choice(config.data.on_bad_row, "data.on_bad_row", ON_BAD_ROW)
    _choice(config.loss.name, "loss.name", LOSS_NAMES)
    dataset.check_split(config.data.split)
    _choice(config.train.lr_decay, "train.lr_decay", LR_DECAYS)
    _choice(config.train.on_nonfinite, "train.on_nonfinite", ON_NONFINITE)
    _choice(config.train.compute_dtype, "train.compute_dtype", COMPUTE_DTYPES)
    if config.train.sparse_item_updates and config.loss.name == "full_softmax":
        raise ConfigError(
            "train.sparse_item_updates=True needs loss.name=sampled_softmax: the full softmax "
            "touches every row of the item table"
        )
    dense_reason = dense_table_reason(config.model)
    if config.train.sparse_item_updates and dense_reason:
        raise ConfigError(
            f"train.sparse_item_updates=True does not fit model.name={config.model.name!r}: "
            f"{dense_reason}"
        )
    _, model_size = mesh_shape(config, num_devices)
    if config.mesh.shard_prototypes and config.model.num_prototypes % model_size:
        raise ConfigError(
            f"mesh.shard_prototypes=True needs model.num_prototypes="
            f"{config.model.num_prototypes} divisible by mesh.model={model_size}"
        )
    _at_least(config.model.max_seq_len, "model.max_seq_len", 1)
    _at_least(config.loss.negatives_per_example, "loss.negatives_per_example", 1)
    _at_least(config.train.batch_size, "train.batch_size", 1)
    _at_least(config.train.num_epochs, "train.num_epochs", 1)
    _at_least(config.train.warmup_steps, "train.warmup_steps", 0)
    _at_least(config.train.grad_clip_norm, "train.grad_clip_norm", 0.0)
    _at_least(config.train.patience, "train.patience", 0)
    _at_least(config.train.log_every_steps, "train.log_every_steps", 1)
    _at_least(config.eval.every_steps, "eval.every_steps", 0)
    _at_least(config.eval.batch_size, "eval.batch_size", 1)
    _at_least(config.eval.item_chunk_size, "eval.item_chunk_size", 1)
    _at_least(config.checkpoint.every_steps, "checkpoint.every_steps", 1)
    _at_least(config.checkpoint.keep, "checkpoint.keep", 1)
    if not config.train.learning_rate > 0:
        raise ConfigError(f"train.learning_rate={config.train.learning_rate} must be > 0")
    if config.loss.cov_weight is not None:
        _at_least(config.loss.cov_weight, "loss.cov_weight", 0.0)
    ks = config.eval.ks
    if (not isinstance(ks, (tuple, list)) or not ks
            or not all(isinstance(k, numbers.Integral) and not isinstance(k, bool) and k >= 1
                        for k in ks)):
        raise ConfigError(f"eval.ks={ks!r} must be positive integer cut-offs, e.g. (10, 50)")
    held_out = config.data.split == "held_out_users"
    names = ("Recall", "NDCG", "HitRate") if held_out else ("HR", "NDCG")
    allowed_metrics = tuple(f"{m}@{k}" for m in names for k in config.eval.ks)
    _choice(config.eval.metric, "eval.metric", allowed_metrics)
    data_size, _ = mesh_shape(config, num_devices)
    if config.train.batch_size % data_size:
        raise ConfigError(
            f"train.batch_size={config.train.batch_size} is not divisible by the {data_size} "
            f"devices of the 'data' mesh axis"
        )
    if config.eval.batch_size % data_size:
        raise ConfigError(
            f"eval.batch_size={config.eval.batch_size} is not divisible by the {data_size} "
            f"devices of the 'data' mesh axis"
        )
