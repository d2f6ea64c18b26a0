"""MovieLens with the paper's Table 3 settings: K=4, L=50, D=128, n=20, lambda=0.5, 5 x B negatives.

  python -m sine_jax.main --config=configs/movielens.py --workdir=runs/ml1m \
      --config.data.path=../shared/data/ml-1m-subset/ratings_cs100_subset.dat
"""

from configs import default


def get_config():
    config = default.get_config()
    config.data.format = "movielens"
    config.data.min_user_interactions = 5  # ML-1M users all have >= 20 ratings
    config.model.embed_dim = 128
    config.model.num_interests = 4
    config.model.num_prototypes = 50
    config.model.max_seq_len = 20
    config.loss.negatives_per_example = 5
    config.train.batch_size = 128
    config.train.num_epochs = 4
    config.train.patience = 3
    config.eval.every_steps = 1000
    config.checkpoint.every_steps = 2000
    return config
