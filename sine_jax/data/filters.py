"""Minimum-count filters on users and items (k-core), on dense integer codes.

One pass drops the items with fewer than `min_item` interactions, then the users with fewer
than `min_user` of the remaining ones (the authors' Taobao script, ComiRec's `preprocess/
data.py`). Iterative repeats both until nothing changes, so every kept user and item meets
its minimum (the k-core). Counts are of events, duplicates included.

Shapes: N events, U users, M items.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class FilterResult:
    """Which events survive the filters.

    Attributes:
        keep: [N] bool.
        dropped: {items_below_min_item_interactions, interactions_of_those_items,
            users_below_min_user_interactions, interactions_of_those_users}: summed over passes.
        passes: passes run (1 without `iterative`).
        emptied_by: None, or "item" / "user": the filter that left no event.
    """

    keep: np.ndarray
    dropped: dict
    passes: int
    emptied_by: str | None


def min_count_filter(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int, *,
                     min_user: int, min_item: int, iterative: bool) -> FilterResult:
    """Applies the item filter then the user filter, once or until stable.

    Args:
        users: [N] int user codes in 0..U-1.
        items: [N] int item codes in 0..M-1.
        num_users: U.
        num_items: M.
        min_user: users with fewer events are dropped.
        min_item: items with fewer events are dropped.
        iterative: repeat until no user or item is dropped.

    Returns:
        The surviving events and counts of what was dropped.
    """
    keep = np.ones(len(users), bool)
    dropped = dict.fromkeys(("items_below_min_item_interactions", "interactions_of_those_items",
                             "users_below_min_user_interactions", "interactions_of_those_users"),
                            0)
    passes = 0
    while True:
        passes += 1
        changed = False
        for kind, codes, size, minimum in (("item", items, num_items, min_item),
                                           ("user", users, num_users, min_user)):
            counts = np.bincount(codes[keep], minlength=size)
            below = (counts > 0) & (counts < minimum)
            if below.any():
                changed = True
                dropped[f"{kind}s_below_min_{kind}_interactions"] += int(below.sum())
                dropped[f"interactions_of_those_{kind}s"] += int(counts[below].sum())
                keep &= ~below[codes]
                if not keep.any():
                    return FilterResult(keep, dropped, passes, kind)
        if not (iterative and changed):
            return FilterResult(keep, dropped, passes, None)
