"""Amazon Books, ratings-only CSV (`user,item,rating,timestamp`), paper Table 3: K=4, L=500.

  python -m sine_jax.main --config=configs/amazon.py --workdir=runs/amazon \
      --config.data.path=/data/ratings_Books.csv

The Amazon reader comes with the data-at-scale issue; until then this config stops with a
message saying that the `amazon` format is not implemented yet.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.data.format = "amazon"
    config.model.num_interests = 4
    config.model.num_prototypes = 500
    config.loss.negatives_per_example = 10
    config.train.num_epochs = 2
    config.eval.every_steps = 20000
    config.checkpoint.every_steps = 5000
    return config
