"""ULarge-style industrial logs in the generic CSV/Parquet format, paper Table 3: K=8, L=5000.

  python -m sine_jax.main --config=configs/ularge.py --workdir=runs/ularge \
      --config.data.path=/data/clicks.parquet

The generic CSV/Parquet reader comes with the data-at-scale issue; until then this config
stops with a message saying that the `csv` format is not implemented yet.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.data.format = "csv"
    config.model.num_interests = 8
    config.model.num_prototypes = 5000
    config.loss.negatives_per_example = 10
    config.train.num_epochs = 1
    config.eval.every_steps = 50000
    config.checkpoint.every_steps = 10000
    return config
