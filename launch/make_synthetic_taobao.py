"""Writes a synthetic log in Taobao's UserBehavior.csv format, for preprocessing at scale.

  python launch/make_synthetic_taobao.py --rows=100_000_000 --out=/tmp/UserBehavior_100M.csv

Rows are `user,item,category,behavior,timestamp` without a header, grouped by user (user ids
shuffled, as in the real file), each user's rows in time order within the real file's
window (2017-11-25 .. 2017-12-03). Defaults follow the real file's shape at 100M rows:
~988k users (sequence lengths log-normal, mean ~100), 4.16M items with Zipf popularity
(exponent `--zipf`), ~9.4k categories, behaviours pv/cart/fav/buy at 89.5/5.5/2.9/2.1%.
Users and items scale with `--rows`. Memory stays in the tens of MiB: users are written in
chunks. Deterministic for a seed.
"""

import sys
import time

import numpy as np
import polars as pl
from absl import flags

from sine_jax import cli

BEHAVIORS = ("pv", "cart", "fav", "buy")
BEHAVIOR_PROBS = (0.895, 0.055, 0.029, 0.021)
START, END = 1511539200, 1512316800  # 2017-11-25 00:00 .. 2017-12-03 24:00 (UTC+8 midnight)
ROWS_PER_USER = 101.4  # 100,150,807 rows / 987,994 users in the real file
ROWS_PER_ITEM = 24.1  # 100,150,807 / 4,162,024
ROWS_PER_CATEGORY = 10_610.0  # 100,150,807 / 9,439


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_integer("rows", 1_000_000, "rows to write (about)", flag_values=flag_values)
    flags.DEFINE_string("out", None, "the CSV file to write", flag_values=flag_values)
    flags.DEFINE_float("zipf", 1.0, "item popularity exponent", flag_values=flag_values)
    flags.DEFINE_integer("seed", 0, "random seed", flag_values=flag_values)
    flags.DEFINE_integer("chunk_rows", 2_000_000, "rows per write", flag_values=flag_values)
    flags.mark_flags_as_required(["out"], flag_values=flag_values)


@cli.tool
def main(argv: list[str] | None = None):
    args = cli.parse_flags(define_flags, argv, __doc__)

    rng = np.random.default_rng(args.seed)
    num_users = max(1, round(args.rows / ROWS_PER_USER))
    num_items = max(2, round(args.rows / ROWS_PER_ITEM))
    num_categories = max(1, round(args.rows / ROWS_PER_CATEGORY))
    # Lengths: log-normal with mean ROWS_PER_USER, rescaled so that they sum to --rows.
    sigma = 1.0
    lengths = rng.lognormal(np.log(ROWS_PER_USER) - sigma**2 / 2, sigma, num_users)
    lengths = np.maximum(1, np.round(lengths * args.rows / lengths.sum())).astype(np.int64)
    user_ids = rng.permutation(np.arange(1, num_users + 1))  # file order: shuffled ids
    # Popularity rank r (0 = most popular) has weight 1 / (r + 1)^zipf; ranks map to random ids.
    cdf = np.cumsum(1.0 / np.arange(1, num_items + 1) ** args.zipf)
    cdf /= cdf[-1]
    item_of_rank = rng.permutation(np.arange(1, num_items + 1))
    category_of_item = rng.integers(1, num_categories + 1, num_items + 1)
    behavior_cdf = np.cumsum(BEHAVIOR_PROBS)

    started = time.time()
    written = 0
    with open(args.out, "wb") as f:
        first = 0
        while first < num_users:
            last = first + max(1, int(np.searchsorted(
                np.cumsum(lengths[first:]), args.chunk_rows)))
            chunk_lengths = lengths[first:last]
            n = int(chunk_lengths.sum())
            users = np.repeat(user_ids[first:last], chunk_lengths)
            items = item_of_rank[np.minimum(np.searchsorted(cdf, rng.random(n)), num_items - 1)]
            behaviors = np.minimum(np.searchsorted(behavior_cdf, rng.random(n)), 3)
            starts = np.repeat(np.cumsum(chunk_lengths) - chunk_lengths, chunk_lengths)
            times = _sorted_within(rng.integers(START, END, n), starts)
            frame = pl.DataFrame({
                "user": users,
                "item": items,
                "category": category_of_item[items],
                "behavior": pl.Series(np.array(BEHAVIORS)[behaviors]),
                "timestamp": times,
            })
            frame.write_csv(f, include_header=False)
            written += n
            first = last
    print(f"wrote {written:,} rows ({num_users:,} users, {num_items:,} items, "
          f"{num_categories:,} categories) to {args.out} in {time.time() - started:.0f} s")


def _sorted_within(times: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """`times` sorted within each block of consecutive rows (`starts`: each row's block start)."""
    offset = starts.astype(np.int64) * (END - START + 1)
    return np.sort(times - START + offset) - offset + START


if __name__ == "__main__":
    sys.exit(main())
