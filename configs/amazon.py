"""Amazon Books, ratings-only CSV (`user,item,rating,timestamp`), paper Table 3: K=4, L=500.

  python -m sine_jax.main --config=configs/amazon.py --workdir=runs/amazon \
      --config.data.path=/data/ratings_Books.csv

Ids are strings (reviewer ids, ASINs). Filters: the paper's Table 2 counts (8,026,324 users,
2,330,066 items, 22,507,155 interactions) are those of the unfiltered ratings_Books.csv, and the
paper contrasts it with the 5-core version, so no count filter is applied beyond
leave-one-out's floor of 3 interactions per user.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.data.format = "amazon"
    config.data.min_user_interactions = 3  # leave-one-out's floor; the paper filters nothing
    config.data.min_item_interactions = 1
    config.data.kcore_iterative = False
    config.model.num_interests = 4
    config.model.num_prototypes = 500
    config.loss.negatives_per_example = 10
    config.train.num_epochs = 2
    config.eval.every_steps = 20000
    config.checkpoint.every_steps = 5000
    return config
