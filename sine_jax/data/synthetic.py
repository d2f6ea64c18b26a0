"""A synthetic interaction log with planted multi-interest and sequential structure.

Items 1..M are split at random into C categories of (nearly) equal size. Each category orders
its items in a random cycle, the "chain". Each user:
  * likes 2..4 categories, with weights drawn from a flat Dirichlet;
  * has a sequence of 20..60 items made of segments (interest switches): a segment stays in one
    category for a geometric number of steps (mean `mean_segment_length`), then the user
    switches to another of their categories, drawn by weight;
  * inside a category walks along its chain: the next item is the next not-yet-seen item
    after the last item the user took from that category (so after a switch the user resumes
    where they left that category); with probability `jump_prob`, and on the first visit of a
    category, the user jumps to an unseen item of the category drawn by a within-category
    popularity (Zipf, exponent 1, random ranks).
No user sees an item twice (unless a category is exhausted). The next item is thus predictable
from the recent history of the same category, while items are about equally popular overall,
so a global popularity ranking is weak. With leave-one-out and the history excluded (defaults,
seeds 0 and 1): training-count popularity HR@10 ~ 0.01; a first-order transition-count model
fitted on the training parts, scoring the successors of the last input item, HR@10 ~ 0.67.
Timestamps are the row order; users are 1..U, in order.
"""

import bisect
import itertools
from typing import NamedTuple

import numpy as np

from sine_jax.data.metadata import ItemMetadata
from sine_jax.data.readers import Interactions
from sine_jax.errors import ConfigError


def generate(num_users: int = 2000, num_items: int = 1000, num_categories: int = 20,
             seed: int = 0, *, min_length: int = 20, max_length: int = 60,
             min_categories_per_user: int = 2, max_categories_per_user: int = 4,
             mean_segment_length: float = 5.0, jump_prob: float = 0.15,
             ) -> tuple[Interactions, ItemMetadata]:
    """Generates the log; deterministic for a seed. Takes well under a second at the defaults.

    Args:
        num_users: U.
        num_items: M; raw item ids are 1..M.
        num_categories: C; at least 2, and at least 2 items per category.
        seed: the random seed.
        min_length: the shortest sequence (>= 3, for leave-one-out).
        max_length: the longest sequence.
        min_categories_per_user: the fewest categories a user likes (>= 1).
        max_categories_per_user: the most (<= C).
        mean_segment_length: mean number of steps before an interest switch (>= 1).
        jump_prob: probability of leaving the chain for a popularity-drawn item.

    Returns:
        (the log, metadata whose genres are the categories "cat 0".."cat C-1").

    Raises:
        ConfigError: an argument out of range, naming `data.synthetic.<argument>`.
    """
    _check(num_users >= 1, "num_users", num_users, ">= 1")
    _check(num_categories >= 2, "num_categories", num_categories, ">= 2")
    _check(num_items >= 2 * num_categories, "num_items", num_items, ">= 2 * num_categories")
    _check(min_length >= 3, "min_length", min_length, ">= 3")
    _check(max_length >= min_length, "max_length", max_length, ">= min_length")
    _check(1 <= min_categories_per_user, "min_categories_per_user", min_categories_per_user,
           ">= 1")
    _check(min_categories_per_user <= max_categories_per_user <= num_categories,
           "max_categories_per_user", max_categories_per_user,
           "between min_categories_per_user and num_categories")
    _check(mean_segment_length >= 1, "mean_segment_length", mean_segment_length, ">= 1")
    _check(0 <= jump_prob <= 1, "jump_prob", jump_prob, "in [0, 1]")

    rng = np.random.default_rng(seed)
    chains = [c.tolist() for c in np.array_split(rng.permutation(num_items) + 1, num_categories)]
    # Cumulative within-category popularity of each chain position (Zipf over random ranks).
    start_cdfs = [np.cumsum(1.0 / (1 + rng.permutation(len(c)))).tolist() for c in chains]
    lengths = rng.integers(min_length, max_length + 1, size=num_users)
    num_liked = rng.integers(min_categories_per_user, max_categories_per_user + 1, size=num_users)
    liked = np.argsort(rng.random((num_users, num_categories)), axis=1)
    weights = rng.dirichlet(np.ones(max_categories_per_user), size=num_users)
    first = rng.random(num_users)
    total = int(lengths.sum())
    draws = _Draws(jump=(rng.random(total) < jump_prob).tolist(), pick=rng.random(total).tolist(),
                   segment=rng.geometric(1.0 / mean_segment_length, size=total).tolist(),
                   switch=rng.random(total).tolist())
    items = []
    for user in range(num_users):
        k = int(num_liked[user])
        items.extend(_user_sequence(
            int(lengths[user]), liked[user, :k].tolist(), weights[user, :k].tolist(),
            float(first[user]), chains, start_cdfs, draws, offset=len(items)))
    users = np.repeat(np.arange(1, num_users + 1, dtype=np.int64), lengths)
    interactions = Interactions(users=users, items=np.asarray(items, np.int64),
                                timestamps=np.arange(total, dtype=np.int64),
                                path=f"<synthetic seed={seed}>")
    names = tuple(f"cat {c}" for c in range(num_categories))
    category = {i: c for c, chain in enumerate(chains) for i in chain}
    metadata = ItemMetadata(
        titles={i: f"item {i} (cat {c})" for i, c in sorted(category.items())},
        genres={i: (names[c],) for i, c in sorted(category.items())},
        genre_names=names,
    )
    return interactions, metadata


class _Draws(NamedTuple):
    """Random numbers drawn up front, one per generated interaction (Python lists)."""

    jump: list[bool]  # leave the chain
    pick: list[float]  # uniform, for the popularity draw of a jump
    segment: list[int]  # segment length, read at the start of a segment
    switch: list[float]  # uniform, for the next category, read at the end of a segment


def _check(ok: bool, name: str, value, allowed: str):
    if not ok:
        raise ConfigError(f"data.synthetic.{name}={value!r} is not allowed; it must be {allowed}")


def _user_sequence(length: int, liked: list[int], liked_weights: list[float], first: float,
                   chains: list[list[int]], start_cdfs: list[list[float]], draws: _Draws,
                   offset: int) -> list[int]:
    """One user's item sequence (raw ids), see the module docstring.

    Args:
        length: the sequence length.
        liked: the user's categories.
        liked_weights: the weights of `liked`.
        first: a uniform number that draws the first category.
        chains: each category's items in chain order.
        start_cdfs: cumulative popularity of each category's chain positions.
        draws: random numbers; this user uses indices offset..offset+length-1.
        offset: the user's first index into `draws`.
    """
    seen = set()
    position = {}  # category -> chain index of the user's last item there
    sequence = []
    current = _draw(list(itertools.accumulate(liked_weights)), first)
    while len(sequence) < length:
        start = offset + len(sequence)
        category = liked[current]
        chain = chains[category]
        end = min(start + draws.segment[start], offset + length)
        for t in range(start, end):
            if category not in position or draws.jump[t]:
                j = _draw_unseen(chain, start_cdfs[category], seen, draws.pick[t])
            else:
                j = _next_unseen(chain, position[category], seen)
            position[category] = j
            seen.add(chain[j])
            sequence.append(chain[j])
        if len(liked) > 1:  # switch to another liked category, by weight
            others = [0.0 if i == current else w for i, w in enumerate(liked_weights)]
            current = _draw(list(itertools.accumulate(others)), draws.switch[end - 1])
    return sequence


def _draw(cdf: list[float], u: float) -> int:
    """Index drawn from a cumulative weight list with a uniform u in [0, 1); never a zero weight."""
    return min(bisect.bisect_right(cdf, u * cdf[-1]), len(cdf) - 1)


def _draw_unseen(chain: list[int], cdf: list[float], seen: set[int], u: float) -> int:
    """A chain position drawn by popularity among the unseen items (among all if none)."""
    j = _draw(cdf, u)
    if chain[j] not in seen:
        return j
    unseen = [k for k, item in enumerate(chain) if item not in seen]
    if not unseen:
        return j
    weights = [cdf[k] - (cdf[k - 1] if k else 0.0) for k in unseen]
    return unseen[_draw(list(itertools.accumulate(weights)), u)]


def _next_unseen(chain: list[int], j: int, seen: set[int]) -> int:
    """Index of the first unseen item after position j of the cycle (the next one if none)."""
    for step in range(1, len(chain) + 1):
        k = (j + step) % len(chain)
        if chain[k] not in seen:
            return k
    return (j + 1) % len(chain)
