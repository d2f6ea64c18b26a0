"""ULarge-style industrial logs in the generic CSV/Parquet format, paper Table 3: K=8, L=5000.

  python -m sine_jax.main --config=configs/ularge.py --workdir=runs/ularge \
      --config.data.path=data/ularge/clicks.parquet \
      --config.data.user_column=user_id --config.data.item_column=item_id \
      --config.data.time_column=timestamp --config.data.category_column=category_id

ULarge itself is not public and the paper gives no filter for it; this config uses the
authors' Taobao preprocessing (Alibaba click logs too): one pass, items with fewer than 5
clicks, then users with fewer than 5.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.data.format = "csv"
    config.data.min_user_interactions = 5
    config.data.min_item_interactions = 5
    config.data.kcore_iterative = False
    config.model.num_interests = 8
    config.model.num_prototypes = 5000
    config.loss.negatives_per_example = 10
    config.train.num_epochs = 1
    config.eval.every_steps = 50000
    config.checkpoint.every_steps = 10000
    return config
