"""Taobao UserBehavior (click `pv` events), paper Table 3: K=8, L=1000.

  python -m sine_jax.main --config=configs/taobao.py --workdir=runs/taobao \
      --config.data.path=/data/UserBehavior.csv

The Taobao reader comes with the data-at-scale issue; until then this config stops with a
message saying that the `taobao` format is not implemented yet.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.data.format = "taobao"
    config.model.num_interests = 8
    config.model.num_prototypes = 1000
    config.loss.negatives_per_example = 10
    config.train.num_epochs = 2
    config.eval.every_steps = 20000
    config.checkpoint.every_steps = 5000
    return config
