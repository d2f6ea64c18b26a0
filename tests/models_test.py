"""The model registry: every `model.name` trains in the same loop and beats popularity."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import default, synthetic
from sine_jax import models, step, train
from sine_jax.errors import ConfigError
from sine_jax.models import layers


def test_label_aware_readout_picks_the_interest_nearest_the_target():
    rng = np.random.default_rng(0)
    interests = rng.normal(size=(5, 3, 4)).astype(np.float32)
    targets = rng.normal(size=(5, 4)).astype(np.float32)
    want = interests[np.arange(5), np.argmax(np.einsum("bkd,bd->bk", interests, targets), 1)]
    got = layers.label_aware_readout(jnp.asarray(interests), jnp.asarray(targets))
    np.testing.assert_allclose(got, want)
    # The gradient reaches the chosen interest only.
    grad = jax.grad(lambda x: layers.label_aware_readout(x, jnp.asarray(targets)).sum())(
        jnp.asarray(interests)
    )
    chosen = np.argmax(np.einsum("bkd,bd->bk", interests, targets), 1)
    np.testing.assert_array_equal(np.abs(np.asarray(grad)).sum(-1) > 0, np.eye(3)[chosen] > 0)


@pytest.mark.parametrize(
    "name, message",
    [
        ("pop", "'pop' ranks by popularity and builds no model"),
        ("bert4rec", "model.name='bert4rec' must be one of ('gru4rec', "),
    ],
)
def test_build_model_names_what_it_cannot_build(name, message):
    config = default.get_config().model
    config.name = name
    with pytest.raises(ConfigError) as info:
        models.build_model(config, 10, nnx.Rngs(0))
    assert message in str(info.value)


def _tiny(name: str):
    config = synthetic.get_config()
    config.data.synthetic.num_users = 300
    config.data.synthetic.num_items = 200
    config.data.synthetic.num_categories = 10
    config.model.name = name
    config.model.embed_dim = 16
    config.model.num_prototypes = 10
    config.train.batch_size = 64
    config.train.num_epochs = 1
    config.eval.every_steps = 0  # once, at the end
    config.checkpoint.every_steps = 10_000  # (evaluations still checkpoint)
    config.eval.ks = (10,)
    config.eval.metric = "HR@10"
    config.mesh.data = 1  # learning, not sharding, is tested here (step_test shards)
    return config


@pytest.fixture(scope="module")
def popularity(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("pop"))
    return train.train_and_evaluate(_tiny("pop"), workdir)["test"]["HR@10"]


@pytest.mark.parametrize("name", [n for n in models.ENCODERS if n != "sine"])
def test_every_model_learns_the_synthetic_data(name, popularity, tmp_path):
    """Sampled negatives and row-sparse updates (the train step's gathered table), except
    SINE-cate, whose category prototypes need the whole table."""
    config = _tiny(name)
    config.loss.negatives_per_example = 1  # S = 64 < 200 items: sampled
    if name == "sine_cate":  # learns slower (HR@10 0.13 after one epoch, 0.23 after two)
        config.train.num_epochs = 2
    if name == "sine_label":  # the default preset's encoder and dropout: 0.08 after one epoch
        config.train.num_epochs = 2
    config.train.sparse_item_updates = name != "sine_cate"
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["config"]["model"]["name"] == name
    assert os.path.exists(tmp_path / "results.json")
    assert results["test"]["HR@10"] > popularity + 0.05


@pytest.mark.parametrize(
    "overrides", [{"preset": "official"}, {"preset": "paper", "input_table": "separate"}]
)
def test_sine_presets_beyond_the_paper_learn_the_synthetic_data(overrides, popularity, tmp_path):
    """The reference code's preset (lambda = 0 with it) and the tuned preset's separate input
    table train end to end (dense updates) and beat popularity."""
    config = _tiny("sine")
    config.model.update(overrides)
    results = train.train_and_evaluate(config, str(tmp_path))
    assert {k: results["config"]["model"][k] for k in overrides} == overrides
    assert results["test"]["HR@10"] > popularity + 0.05
    if overrides["preset"] == "official":
        assert step.cov_weight(config) == 0.0
