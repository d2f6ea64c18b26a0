"""Taobao UserBehavior (click `pv` events), paper Table 3: K=8, L=1000.

  python -m sine_jax.data.fetch taobao --archive=UserBehavior.csv.zip
  python -m sine_jax.main --config=configs/taobao.py --workdir=runs/taobao \
      --config.data.path=data/taobao/UserBehavior.csv

The file needs a sign-in at https://tianchi.aliyun.com/dataset/649: download
UserBehavior.csv.zip there, then install it with the first command.

Filters as in the authors' preprocessing (ComiRec's `preprocess/data.py`, which SINE's code
builds on): one pass, items with fewer than 5 clicks dropped, then users with fewer than 5 of
the remaining clicks. The item categories (column 3) feed NMI and SINE-cate.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.data.format = "taobao"
    config.data.min_user_interactions = 5
    config.data.min_item_interactions = 5
    config.data.kcore_iterative = False  # one pass, items then users, as the authors' script
    config.model.num_interests = 8
    config.model.num_prototypes = 1000
    config.loss.negatives_per_example = 10
    config.train.num_epochs = 2
    config.eval.every_steps = 20000
    config.checkpoint.every_steps = 5000
    return config
