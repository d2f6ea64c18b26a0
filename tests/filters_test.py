"""Tests for sine_jax.data.filters: one pass and iterative k-core, by hand."""

import numpy as np
import pytest

from sine_jax.data import filters

# Codes (user, item). Item 3 has 1 event; user 2 then has 1 event; without user 2, item 2 has
# 1 event; without it, user 1 has 2 events.
EVENTS = [(0, 0), (0, 1), (0, 0), (1, 0), (1, 1), (1, 2), (2, 3), (2, 2), (1, 0)]


def _run(min_user, min_item, iterative):
    users, items = (np.array(x) for x in zip(*EVENTS))
    return filters.min_count_filter(users, items, 3, 4, min_user=min_user, min_item=min_item,
                                    iterative=iterative)


def test_one_pass():
    result = _run(min_user=2, min_item=2, iterative=False)
    np.testing.assert_array_equal(result.keep, [1, 1, 1, 1, 1, 1, 0, 0, 1])
    assert result.dropped == {
        "items_below_min_item_interactions": 1, "interactions_of_those_items": 1,
        "users_below_min_user_interactions": 1, "interactions_of_those_users": 1}
    assert (result.passes, result.emptied_by) == (1, None)


def test_iterative_until_stable():
    result = _run(min_user=2, min_item=2, iterative=True)
    # Pass 2 drops item 2 (one event left, user 1's); user 1 keeps 3 events. Pass 3: no change.
    np.testing.assert_array_equal(result.keep, [1, 1, 1, 1, 1, 0, 0, 0, 1])
    assert result.dropped == {
        "items_below_min_item_interactions": 2, "interactions_of_those_items": 2,
        "users_below_min_user_interactions": 1, "interactions_of_those_users": 1}
    assert (result.passes, result.emptied_by) == (3, None)


@pytest.mark.parametrize("min_user,min_item,iterative,emptied_by,passes", [
    (1, 5, False, "item", 1),
    (9, 1, False, "user", 1),
    (4, 2, True, "user", 2),  # pass 1 leaves user 1 (4 events); pass 2 items 1, 2, user 1
])
def test_emptied_by(min_user, min_item, iterative, emptied_by, passes):
    result = _run(min_user, min_item, iterative)
    assert not result.keep.any()
    assert (result.emptied_by, result.passes) == (emptied_by, passes)


def test_no_filter_keeps_everything():
    result = _run(min_user=0, min_item=0, iterative=True)
    assert result.keep.all() and result.passes == 1
    assert set(result.dropped.values()) == {0}
