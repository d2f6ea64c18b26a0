"""Tiny CPU run on the built-in synthetic dataset (nothing to download); under a minute.
`tiny`: a run of a few seconds (300 users, 200 items, D=16), what the tests train.

  python -m sine_jax.main --config=configs/synthetic.py --workdir=runs/synthetic
  python -m sine_jax.main --config=configs/synthetic.py:tiny --workdir=runs/synthetic_tiny
"""

from configs import default

PRESETS = ("default", "tiny")


def get_config(preset: str = "default"):
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r}: expected one of {', '.join(PRESETS)}")
    config = default.get_config()
    config.data.format = "synthetic"
    config.model.embed_dim = 32
    config.model.num_interests = 4
    config.model.num_prototypes = 20
    config.model.max_seq_len = 20
    config.train.batch_size = 128
    config.train.num_epochs = 3
    config.train.patience = 3
    config.train.log_every_steps = 50
    config.eval.every_steps = 200
    config.checkpoint.every_steps = 50
    if preset == "tiny":
        config.data.synthetic.num_users = 300
        config.data.synthetic.num_items = 200
        config.data.synthetic.num_categories = 10
        config.model.embed_dim = 16
        config.model.num_prototypes = 10
        config.train.batch_size = 64
        config.train.num_epochs = 2
        config.train.log_every_steps = 10
        config.eval.every_steps = 40
        config.checkpoint.every_steps = 25
    return config
