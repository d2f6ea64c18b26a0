"""Config validation and the optimizer options."""

import json

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import amazon, default, movielens, synthetic, taobao, ularge
from sine_jax import config_checks, run_config, step
from sine_jax.data import dataset
from sine_jax.errors import ConfigError, DataError


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("model.name", "bert4rec", "model.name='bert4rec' is not one of pop, gru4rec"),
        ("data.on_bad_row", "ignore", "data.on_bad_row='ignore' is not one of error, skip"),
        ("model.max_seq_len", 0, "model.max_seq_len=0 must be >= 1"),
        ("train.learning_rate", 0.0, "train.learning_rate=0.0 must be > 0"),
        ("eval.metric", "MRR", "eval.metric='MRR' is not one of HR@10"),
        ("train.lr_decay", "step", "train.lr_decay='step' is not one of constant, cosine"),
    ],
)
def test_bad_fields_are_named_with_allowed_values(field, value, message):
    config = default.get_config()
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(ConfigError) as err:
        config_checks.check_config(config, num_devices=1)
    assert str(err.value).startswith(message)


def test_shipped_configs_are_valid():
    for module in (default, synthetic, movielens, amazon, taobao, ularge):
        config_checks.check_config(module.get_config(), num_devices=8)
    config_checks.check_config(amazon.get_config("toys"), num_devices=8)
    assert amazon.get_config("toys").data.format == "sequences"
    tuned = movielens.get_config("tuned")
    config_checks.check_config(tuned, num_devices=8)
    config_checks.check_config(synthetic.get_config("tiny"), num_devices=8)
    paper = movielens.get_config()
    assert paper == movielens.get_config("paper") and paper.model.input_table is None
    changed = [k for k, v in run_config.flatten(json.loads(tuned.to_json())).items()
               if run_config.flatten(json.loads(paper.to_json()))[k] != v]
    # the tuned preset's whole difference: its table, its schedule, four epochs
    assert sorted(changed) == [
        "eval.every_steps", "model.input_table", "train.lr_decay", "train.num_epochs",
        "train.patience",
    ]
    assert paper.model.preset == "default"  # with the cosine assignment of eq 3


def test_unknown_data_format_is_rejected(tmp_path):
    config = default.get_config()
    config.data.format = "parquetish"
    with pytest.raises(ConfigError, match="data.format"):
        dataset.load_dataset(config.data, str(tmp_path))


@pytest.mark.parametrize("preset", [amazon, taobao, ularge])
def test_large_dataset_presets_read_their_formats(tmp_path, preset):
    config = preset.get_config()
    config.data.path = str(tmp_path / "x.csv")
    with pytest.raises(DataError, match=r"x\.csv: no such file$"):
        dataset.load_dataset(config.data, str(tmp_path))


def _learning_rates(config, total_steps, steps):
    tx = optax.adam(step.learning_rate_schedule(config.train, total_steps))
    params = {"w": jnp.zeros(())}
    state = tx.init(params)
    rates = []
    for _ in range(steps):  # gradient 1: Adam's first step moves by exactly the rate
        updates, state = tx.update({"w": jnp.ones(())}, state, params)
        rates.append(-float(updates["w"]))
    return np.array(rates)


def _closed_form(lr_decay, warmup, total, t):
    """The learning rate at step t: linear from 0 over the warm-up, then constant or
    lr (1 + cos(pi (t - w) / (T - w))) / 2; cosine warms up over at least one step."""
    lr = 1e-3
    if lr_decay == "cosine":
        warmup = max(warmup, 1)
    if t < warmup:
        return lr * t / warmup
    if lr_decay == "constant":
        return lr
    return lr * (1 + np.cos(np.pi * min(t - warmup, total - warmup) / (total - warmup))) / 2


@pytest.mark.parametrize("lr_decay", ["constant", "cosine"])
@pytest.mark.parametrize("warmup", [0, 1, 4])
def test_schedules_follow_their_closed_forms(lr_decay, warmup):
    config = default.get_config()
    config.train.lr_decay, config.train.warmup_steps = lr_decay, warmup
    total = 12
    want = [_closed_form(lr_decay, warmup, total, t) for t in range(total + 3)]
    schedule = step.learning_rate_schedule(config.train, total)
    np.testing.assert_allclose([schedule(t) for t in range(total + 3)], want, rtol=1e-5,
                               atol=1e-10)
    # The rate Adam applies (its first moves under a constant gradient are the rate itself).
    np.testing.assert_allclose(_learning_rates(config, total, 3), want[:3], rtol=1e-4,
                               atol=1e-9)


@pytest.mark.parametrize("name, extra, message", [
    ("sine_cate", {}, "it reads the whole item table each step"),
    ("sine", {"input_table": "separate"}, "looks the history up in a second table"),
])
def test_sparse_updates_refused_where_the_rows_of_one_table_are_not_enough(name, extra, message):
    config = default.get_config()
    config.model.name = name
    config.model.update(extra)
    config.train.sparse_item_updates = True
    with pytest.raises(ConfigError, match=message):
        config_checks.check_config(config, num_devices=1)
    config.train.sparse_item_updates = None  # the default then keeps dense updates
    config_checks.check_config(config, num_devices=1)
    assert not step.uses_sparse_updates(config, num_items=4_000_000)
    config.model.name, config.model.input_table = "sine", None
    assert step.uses_sparse_updates(config, num_items=4_000_000)


@pytest.mark.parametrize("field, value, message", [
    ("train.learning_rate", float("inf"), "train.learning_rate=inf must be a finite number"),
    ("loss.cov_weight", float("nan"), "loss.cov_weight=nan must be a finite number"),
    ("train.grad_clip_norm", float("nan"), "train.grad_clip_norm=nan must be a finite number"),
    ("model.temperature", float("-inf"), "model.temperature=-inf must be a finite number"),
    ("train.seed", -1, "train.seed=-1 must be an integer in [0, 2**32)"),
    ("data.split_seed", 2**32, "data.split_seed=4294967296 must be an integer in [0, 2**32)"),
    ("data.synthetic.seed", -5, "data.synthetic.seed=-5 must be an integer in [0, 2**32)"),
    ("eval.ks", ("abc",), "eval.ks=('abc',) must be positive integer cut-offs"),
    ("eval.ks", (10, 0), "eval.ks=(10, 0) must be positive integer cut-offs"),
])
def test_values_are_checked_by_kind(field, value, message):
    """Before, inf and nan passed (a NaN clip norm even trained to the end) and a negative
    seed or a string cut-off ended in a traceback."""
    config = default.get_config()
    *groups, name = field.split(".")
    node = config
    for group in groups:
        node = node[group]
    with node.ignore_type():
        node[name] = value
    with pytest.raises(ConfigError) as err:
        config_checks.check_config(config, num_devices=1)
    assert str(err.value) == message or str(err.value).startswith(message)


def test_a_float_field_added_later_is_checked_too():
    config = default.get_config()
    config.train.weight_decay = float("nan")  # any new float field, wherever it is
    with pytest.raises(ConfigError, match="train.weight_decay=nan must be a finite number"):
        config_checks.check_config(config, num_devices=1)
