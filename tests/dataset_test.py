"""Tests for sine_jax.data.dataset: filtering, ordering, remapping, split, cache."""

import glob
import os

import ml_collections
import numpy as np
import pytest

from sine_jax.data import dataset, readers
from sine_jax.errors import ConfigError, DataError, SineError

# user::item::rating::timestamp. User 5 has 2 events (dropped); user 10 has a timestamp tie
# (400 and 500 at t=4) that must keep file order.
RATINGS = """\
10::100::5::3
10::200::4::1
7::300::3::10
10::300::3::2
5::100::1::1
10::400::2::4
7::100::4::11
10::500::5::4
5::600::3::2
7::800::5::12
20::700::1::5
20::100::2::1
7::200::3::13
20::200::3::0
7::900::3::14
30::300::3::1
30::800::3::2
30::100::3::3
30::999::3::4
"""
MOVIES = "100::A (1990)::Drama|Comedy\n300::B (1991)::Comedy\n800::C (1992)::\n"


def _config(path, **overrides):
    config = ml_collections.ConfigDict({
        "format": "movielens", "path": str(path), "on_bad_row": "error", "min_user_interactions": 3,
        "min_item_interactions": 1, "cache_dir": "",
        "synthetic": {"num_users": 2000, "num_items": 1000, "num_categories": 20, "seed": 0}})
    config.update(overrides)
    return config


@pytest.fixture
def ratings(tmp_path):
    directory = tmp_path / "data"
    directory.mkdir()
    (directory / "movies.dat").write_bytes(MOVIES.encode("latin-1"))
    path = directory / "ratings.dat"
    path.write_text(RATINGS)
    return path


def test_remap_split_and_counts(ratings):
    data = dataset.load_dataset(_config(ratings), None)
    # Training counts: 300 -> 3; 100, 200, 800 -> 2 (ties by raw id); the rest only appear as
    # validation/test targets and come last, by raw id.
    np.testing.assert_array_equal(data.item_raw_ids, [-1, 300, 100, 200, 800, 400, 500, 700,
                                                      900, 999])
    np.testing.assert_array_equal(data.item_counts, [0, 3, 2, 2, 2, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(data.user_raw_ids, [7, 10, 20, 30])
    np.testing.assert_array_equal(data.offsets, [0, 5, 10, 13, 17])
    np.testing.assert_array_equal(data.items, [1, 2, 4, 3, 8,  # 300 100 800 200 900
                                               3, 1, 2, 5, 6,  # 200 300 100 400 500
                                               3, 2, 7,  # 200 100 700
                                               1, 4, 2, 9])  # 300 800 100 999
    assert data.items.dtype == np.int32 and data.offsets.dtype == np.int64
    assert data.num_items == 9 and data.num_users == 4
    np.testing.assert_array_equal(data.train_sequence(0), [1, 2, 4])
    assert (data.valid_target(0), data.test_target(0)) == (3, 8)
    np.testing.assert_array_equal(data.train_sequence(2), [3])
    assert (data.valid_target(2), data.test_target(2)) == (2, 7)
    assert data.summary["users"] == 4
    assert data.summary["items"] == 9
    assert data.summary["interactions"] == 17
    assert data.summary["bad_rows"] == 0
    assert data.summary["dropped"] == {
        "items_below_min_item_interactions": 0, "interactions_of_those_items": 0,
        "users_below_min_user_interactions": 1, "interactions_of_those_users": 2}


def test_metadata_attached(ratings):
    data = dataset.load_dataset(_config(ratings), None)
    assert data.category_names == ("Comedy", "Drama")
    # ids: 1=300 (Comedy), 2=100 (Drama first), 3=200 (no metadata), 4=800 (no genre).
    np.testing.assert_array_equal(data.item_categories, [-1, 0, 1, -1, -1, -1, -1, -1, -1, -1])
    assert data.item_titles[:5] == ("", "B (1991)", "A (1990)", "", "C (1992)")
    assert len(data.item_titles) == 10
    assert data.summary["items_without_category"] == 7


def test_no_metadata(ratings):
    os.remove(ratings.parent / "movies.dat")
    data = dataset.load_dataset(_config(ratings), None)
    assert data.item_categories is None and data.item_titles is None
    assert data.category_names == ()


def test_item_then_user_filters(ratings):
    data = dataset.load_dataset(_config(ratings, min_item_interactions=2), None)
    # Items seen once (400 500 600 700 900 999) go first; then users 5 (one event left) and
    # 20 (two left) have fewer than 3.
    assert data.summary["dropped"] == {
        "items_below_min_item_interactions": 6, "interactions_of_those_items": 6,
        "users_below_min_user_interactions": 2, "interactions_of_those_users": 3}
    np.testing.assert_array_equal(data.user_raw_ids, [7, 10, 30])
    assert data.summary["interactions"] == 10
    data = dataset.load_dataset(_config(ratings, min_user_interactions=5), None)
    np.testing.assert_array_equal(data.user_raw_ids, [7, 10])


def test_min_user_interactions_is_at_least_three(ratings):
    data = dataset.load_dataset(_config(ratings, min_user_interactions=0), None)
    np.testing.assert_array_equal(data.user_raw_ids, [7, 10, 20, 30])


def test_no_user_left(ratings):
    with pytest.raises(DataError, match="no user has at least 50 interactions"):
        dataset.load_dataset(_config(ratings, min_user_interactions=50), None)


def test_duplicates_kept_and_counted():
    interactions = readers.Interactions(
        users=np.array([1, 1, 1, 1, 2, 2, 2]), items=np.array([5, 6, 5, 5, 5, 6, 7]),
        timestamps=np.arange(7), path="x")
    data = dataset.preprocess(interactions, None)
    assert data.summary["duplicate_interactions"] == 2
    assert len(data.items) == 7


def test_bad_rows_skip_reported(ratings):
    ratings.write_text(RATINGS + "oops\n")
    with pytest.raises(DataError, match=r"ratings\.dat:20: expected 4 fields"):
        dataset.load_dataset(_config(ratings), None)
    data = dataset.load_dataset(_config(ratings, on_bad_row="skip"), None)
    assert data.summary["bad_rows"] == 1 and data.summary["bad_row_lines"] == [20]


def test_synthetic(tmp_path):
    data = dataset.load_dataset(_config("", format="synthetic"), None)
    assert data.num_users == 2000 and data.num_items == 1000
    assert data.category_names == tuple(f"cat {c}" for c in range(20))
    assert np.all(data.item_categories[1:] >= 0)
    assert np.all(np.diff(data.item_counts[1:]) <= 0)


@pytest.mark.parametrize("overrides,error,message", [
    ({"format": "parquet"}, ConfigError, (r"data.format='parquet' is not allowed; allowed: "
                                          r"synthetic, movielens, interactions, sequences")),
    ({"format": "amazon"}, SineError, "the amazon reader is not implemented yet"),
    ({"path": ""}, ConfigError, "data.path is empty"),
    ({"on_bad_row": "warn"}, ConfigError, "data.on_bad_row='warn'"),
    ({"min_user_interactions": -1}, ConfigError, "data.min_user_interactions=-1"),
    ({"format": "synthetic", "synthetic": {"num_user": 5}}, ConfigError,
     "data.synthetic.num_user is not a generator argument"),
])
def test_config_errors(ratings, overrides, error, message):
    config = _config(ratings)
    for key, value in overrides.items():
        config[key] = value
    with pytest.raises(error, match=message) as e:
        dataset.load_dataset(config, None)
    if error is SineError:
        assert not isinstance(e.value, ConfigError)


def _assert_same(a, b):
    for name in ("offsets", "items", "item_raw_ids", "user_raw_ids", "item_counts",
                 "item_categories"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert getattr(a, name).dtype == getattr(b, name).dtype
    assert (a.num_items, a.category_names, a.item_titles, a.summary) == (
        b.num_items, b.category_names, b.item_titles, b.summary)


def test_cache_hit(ratings, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    first = dataset.load_dataset(_config(ratings), cache)
    assert len(glob.glob(os.path.join(cache, "dataset-*.npz"))) == 1
    assert len(glob.glob(os.path.join(cache, "dataset-*.json"))) == 1
    assert not glob.glob(os.path.join(cache, ".tmp-*"))

    def no_read(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(readers, "read_interactions", no_read)
    _assert_same(dataset.load_dataset(_config(ratings, cache_dir="elsewhere"), cache), first)


def test_cache_rebuilds_on_changed_config_or_file(ratings, tmp_path):
    cache = str(tmp_path / "cache")
    first = dataset.load_dataset(_config(ratings), cache)
    changed = dataset.load_dataset(_config(ratings, min_user_interactions=5), cache)
    assert changed.num_users == 2
    assert len(glob.glob(os.path.join(cache, "dataset-*.npz"))) == 2
    stat = os.stat(ratings)
    ratings.write_text(RATINGS.replace("30::999::3::4", "30::998::3::4"))
    os.utime(ratings, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime
    rebuilt = dataset.load_dataset(_config(ratings), cache)
    assert rebuilt.item_raw_ids[-1] == 998 and first.item_raw_ids[-1] == 999


def test_cache_rebuilds_on_changed_metadata(ratings, tmp_path):
    cache = str(tmp_path / "cache")
    dataset.load_dataset(_config(ratings), cache)
    (ratings.parent / "movies.dat").write_text(MOVIES.replace("B (1991)", "Bee (1991)"))
    assert dataset.load_dataset(_config(ratings), cache).item_titles[1] == "Bee (1991)"


@pytest.mark.parametrize("suffix,content", [
    (".npz", b"not a zip file"),
    (".npz", b""),
    (".json", b"{broken"),
    (".json", b'{"key_material": 3}'),
])
def test_corrupt_cache_is_rebuilt(ratings, tmp_path, suffix, content):
    cache = str(tmp_path / "cache")
    first = dataset.load_dataset(_config(ratings), cache)
    (target,) = glob.glob(os.path.join(cache, "dataset-*" + suffix))
    with open(target, "wb") as f:
        f.write(content)
    _assert_same(dataset.load_dataset(_config(ratings), cache), first)
    _assert_same(dataset.load_dataset(_config(ratings), cache), first)  # rewritten


def test_inconsistent_cache_is_rebuilt(ratings, tmp_path):
    cache = str(tmp_path / "cache")
    first = dataset.load_dataset(_config(ratings), cache)
    (target,) = glob.glob(os.path.join(cache, "dataset-*.npz"))
    arrays = dict(np.load(target))
    arrays["items"] = arrays["items"][:-1]
    with open(target, "wb") as f:
        np.savez(f, **arrays)
    _assert_same(dataset.load_dataset(_config(ratings), cache), first)


def test_real_ml1m_subset(shared_data):
    path = os.path.join(shared_data, "ml-1m-subset", "ratings_cs100_subset.dat")
    if not os.path.exists(path):
        pytest.skip(f"{path} is not present")
    data = dataset.load_dataset(_config(path), None)
    assert (data.num_users, data.num_items, len(data.items)) == (2_999, 3_615, 487_650)
    assert np.all(np.diff(data.item_counts[1:]) <= 0)
    assert data.item_counts.sum() == 487_650 - 2 * 2_999
    assert len(data.category_names) == 18 and np.all(data.item_categories[1:] >= 0)
    assert data.summary["duplicate_interactions"] == 0
