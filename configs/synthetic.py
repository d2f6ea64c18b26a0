"""Tiny CPU run on the built-in synthetic dataset (nothing to download); under a minute.

  python -m sine_jax.main --config=configs/synthetic.py --workdir=runs/synthetic
"""

from configs import default


def get_config():
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
    return config
