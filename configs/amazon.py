"""Amazon, paper Table 3: K=4, L=500, 10 x B sampled negatives. Two presets:

`books` (the default): the paper's Amazon Books, the ratings-only CSV
(`user,item,rating,timestamp`). Ids are strings (reviewer ids, ASINs). Filters: the paper's
Table 2 counts (8,026,324 users, 2,330,066 items, 22,507,155 interactions) are those of the
unfiltered ratings_Books.csv, and the paper contrasts it with the 5-core version, so no count
filter is applied beyond leave-one-out's floor of 3 interactions per user. Two epochs, with a
validation every 20,000 steps (an epoch is about 100,000 steps).

  python -m sine_jax.data.fetch amazon
  python -m sine_jax.main --config=configs/amazon.py --workdir=runs/amazon \
      --config.data.path=data/amazon/ratings_Books.csv

`toys`: Amazon Toys_and_Games as the S3-Rec benchmark file (`Toys_and_Games.txt`, one
`user item item ...` line per user, 5-core: 19,412 users, 11,924 items, 167,597
interactions), with its `Toys_and_Games_item2attributes.json` beside it for item categories
(NMI, SINE-cate). Trained to convergence: a validation every epoch, early stopping after 5
without improvement. HR/NDCG at 10, 20, 50 and 100 (published numbers on this file use 10
and 20).

  python -m sine_jax.data.fetch amazon-toys
  python -m sine_jax.main --config=configs/amazon.py:toys --workdir=runs/amazon-toys \
      --config.data.path=data/amazon-toys/Toys_and_Games.txt
"""

from configs import default

PRESETS = ("books", "toys")


def get_config(preset: str = "books"):
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r}: expected one of {', '.join(PRESETS)}")
    config = default.get_config()
    config.model.num_interests = 4
    config.model.num_prototypes = 500
    config.loss.negatives_per_example = 10
    if preset == "toys":
        config.data.format = "sequences"
        config.eval.ks = (10, 20, 50, 100)
        return config
    config.data.format = "amazon"
    config.data.min_user_interactions = 3  # leave-one-out's floor; the paper filters nothing
    config.data.min_item_interactions = 1
    config.data.kcore_iterative = False
    config.train.num_epochs = 2
    config.eval.every_steps = 20000
    config.checkpoint.every_steps = 5000
    return config
