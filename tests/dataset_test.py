"""Tests for sine_jax.data.dataset: filtering, ordering, remapping, split, cache."""

import glob
import json
import os
import select
import socket
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from sine_jax.data import cache as cache_lib
from sine_jax.data import dataset, readers
from sine_jax.errors import ConfigError, DataError

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
    with pytest.raises(DataError, match=(r"ratings\.dat: the user filter left nothing: no user "
                                         r"has at least 50 interactions after the item filter "
                                         r"\(data\.min_user_interactions=50; leave_one_out")):
        dataset.load_dataset(_config(ratings, min_user_interactions=50), None)


def test_no_item_left(ratings):
    with pytest.raises(DataError, match=(r"ratings\.dat: the item filter left nothing: no item "
                                         r"has at least 9 interactions")):
        dataset.load_dataset(_config(ratings, min_item_interactions=9), None)


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
                                          r"synthetic, movielens, interactions, sequences, "
                                          r"amazon, taobao, csv")),
    ({"split": "random"}, ConfigError, ("data.split='random' is not allowed; allowed: "
                                        "leave_one_out, held_out_users")),
    ({"kcore_iterative": 1}, ConfigError, "data.kcore_iterative=1 must be True or False"),
    ({"split_seed": -2}, ConfigError, "data.split_seed=-2"),
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
    with pytest.raises(error, match=message):
        dataset.load_dataset(config, None)


def _assert_same(a, b):
    for name in ("offsets", "items", "item_raw_ids", "user_raw_ids", "item_counts",
                 "item_categories", "user_split"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x, y)
            assert x.dtype == y.dtype
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


def test_real_ml1m_subset(shared_file):
    path = shared_file("ml-1m-subset/ratings_cs100_subset.dat")
    data = dataset.load_dataset(_config(path), None)
    assert (data.num_users, data.num_items, len(data.items)) == (2_999, 3_615, 487_650)
    assert np.all(np.diff(data.item_counts[1:]) <= 0)
    assert data.item_counts.sum() == 487_650 - 2 * 2_999
    assert len(data.category_names) == 18 and np.all(data.item_categories[1:] >= 0)
    assert data.summary["duplicate_interactions"] == 0


# --- filters, string ids, categories ----------------------------------------------------------

# u4's items 7 and 8 are rare: the first pass drops them and then u4; only a second pass sees
# that item 6 is now rare, which then leaves u3 with two items.
CASCADE = [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3), (3, 1), (3, 2), (3, 6), (4, 6),
           (4, 7), (4, 8)]


def _interactions(pairs, path="log"):
    users, items = (np.array(x) for x in zip(*pairs))
    return readers.Interactions(users=users, items=items, timestamps=np.arange(len(pairs)),
                                path=path)


@pytest.mark.parametrize("span", [1000, 2**33])  # one sort key, or past 2**32 (lexsort)
def test_events_sorted_by_user_then_time_with_ties_in_file_order(span):
    """Millisecond timestamps over more than 49 days span more than 2**32: user 1's late
    events must stay before user 2's early ones."""
    rng = np.random.default_rng(0)
    low = 1_600_000_000_000
    users = np.repeat([1, 2, 3], 6)
    times = low + rng.choice([0, span // 3, span // 3, span], size=18)  # ties
    items = rng.permutation(18) + 100
    order = rng.permutation(18)  # file order
    log = readers.Interactions(users=users[order], items=items[order], timestamps=times[order],
                               path="log")
    data = dataset.preprocess(log, min_user_interactions=0)
    for u, user in enumerate(data.user_raw_ids):
        rows = sorted((t, row) for row, (v, t) in enumerate(zip(log.users, log.timestamps))
                      if v == user)  # by time, then file row
        want = [log.items[row] for _, row in rows]
        got = data.item_raw_ids[data.items[data.offsets[u] : data.offsets[u + 1]]]
        np.testing.assert_array_equal(got, want, err_msg=f"user {user}")


@pytest.mark.parametrize("iterative,users,dropped,passes", [
    (False, [1, 2, 3], (2, 2, 1, 1), 1),
    (True, [1, 2], (3, 3, 2, 3), 3),
])
def test_kcore_one_pass_or_iterative(iterative, users, dropped, passes):
    data = dataset.preprocess(_interactions(CASCADE), min_user_interactions=3,
                              min_item_interactions=2, kcore_iterative=iterative)
    np.testing.assert_array_equal(data.user_raw_ids, users)
    assert tuple(data.summary["dropped"].values()) == dropped
    assert data.summary["filter_passes"] == passes


AMAZON = """\
B,0000013714,5.0,3
B,B0002,4.0,1
A,B0002,5.0,2
B,0000013714,1.0,2
A,0000013714,3.0,1
A,00001,2.0,3
B,00001,2.0,4
"""


def test_string_ids(tmp_path):
    path = tmp_path / "ratings_Books.csv"
    path.write_text(AMAZON)
    config = _config(path, format="amazon")
    data = dataset.load_dataset(config, str(tmp_path / "cache"))
    # Training parts: A: 0000013714, B0002; B: B0002, 0000013714 (counts 2, 2: ties by raw id).
    assert data.item_raw_ids.dtype.kind == "U"
    assert data.item_raw_ids.tolist() == ["", "0000013714", "B0002", "00001"]
    assert data.user_raw_ids.tolist() == ["A", "B"]
    np.testing.assert_array_equal(data.items, [1, 2, 3, 2, 1, 1, 3])
    assert data.summary["duplicate_interactions"] == 1
    _assert_same(dataset.load_dataset(config, str(tmp_path / "cache")), data)  # from the cache


TAOBAO = """\
1,10,7,pv,1
1,11,8,pv,2
1,10,8,pv,3
1,12,9,buy,4
2,11,8,pv,1
2,10,7,pv,2
2,13,7,pv,3
2,99,5,pv,4
"""


def test_taobao_categories(tmp_path):
    path = tmp_path / "UserBehavior.csv"
    path.write_text(TAOBAO)
    data = dataset.load_dataset(_config(path, format="taobao"), None)
    # Item 10's first event names category 7 (a later one 8). Category 9 (only a buy event)
    # is not kept.
    assert data.item_raw_ids.tolist() == [-1, 10, 11, 13, 99]
    assert data.category_names == ("5", "7", "8")
    np.testing.assert_array_equal(data.item_categories, [-1, 1, 2, 1, 0])
    assert data.item_titles is None
    assert data.summary["items_with_several_categories"] == 1
    assert data.summary["dropped"]["events_not_pv"] == 1


def test_real_taobao_head(shared_file):
    path = shared_file("taobao-userbehavior-head/UserBehavior_head.csv")
    config = _config(path, format="taobao", min_user_interactions=5, min_item_interactions=5)
    # Checked against a plain polars k-core of the pv rows.
    data = dataset.load_dataset(config, None)
    assert (data.num_users, data.num_items, len(data.items)) == (423, 1_341, 9_169)
    data = dataset.load_dataset(_config(path, format="taobao", min_user_interactions=5,
                                        min_item_interactions=5, kcore_iterative=True), None)
    assert (data.num_users, data.num_items, len(data.items)) == (396, 1_201, 8_596)
    assert np.all(np.bincount(data.items)[1:] >= 5) and np.all(np.diff(data.offsets) >= 5)
    assert len(data.category_names) == 302 and np.all(data.item_categories[1:] >= 0)


# --- held-out users ---------------------------------------------------------------------------


def _held_out_log(num_users=30):
    rng = np.random.default_rng(0)
    pairs = [(u, int(i)) for u in range(1, num_users + 1)
             for i in rng.integers(1, 40, rng.integers(2, 9))]
    return _interactions(pairs)


def test_held_out_users_split():
    data = dataset.preprocess(_held_out_log(), split="held_out_users", split_seed=3,
                              min_user_interactions=2)
    assert data.split == "held_out_users" and data.user_split.dtype == np.int8
    assert data.summary["users_per_split"] == {"train": 24, "valid": 3, "test": 3}
    np.testing.assert_array_equal(np.bincount(data.user_split), [24, 3, 3])
    again = dataset.preprocess(_held_out_log(), split="held_out_users", split_seed=3,
                               min_user_interactions=2)
    np.testing.assert_array_equal(again.user_split, data.user_split)
    other = dataset.preprocess(_held_out_log(), split="held_out_users", split_seed=4,
                               min_user_interactions=2)
    assert not np.array_equal(other.user_split, data.user_split)
    # Popularity ids and counts come from the training users' whole sequences only.
    train = data.user_split == dataset.TRAIN
    starts, ends = data.train_bounds()
    np.testing.assert_array_equal(ends - starts, np.where(train, np.diff(data.offsets), 0))
    counts = np.bincount(np.concatenate([data.train_sequence(u) for u in np.flatnonzero(train)]),
                         minlength=data.num_items + 1)
    counts[0] = 0
    np.testing.assert_array_equal(data.item_counts, counts)
    assert np.all(np.diff(data.item_counts[1:]) <= 0)
    with pytest.raises(ValueError, match="leave_one_out only"):
        data.valid_target(0)


def test_held_out_users_keeps_two_item_users():
    log = _interactions([(1, 5), (1, 6)] + [(u, 7) for u in range(2, 12) for _ in range(3)])
    data = dataset.preprocess(log, split="held_out_users", min_user_interactions=0)
    assert data.num_users == 11 and data.summary["sequence_length"]["min"] == 2
    leave_one_out = dataset.preprocess(log, min_user_interactions=0)
    assert leave_one_out.num_users == 10


@pytest.mark.parametrize("num_users,ok", [(4, False), (5, False), (6, True), (10, True)])
def test_held_out_users_needs_a_validation_and_a_test_user(num_users, ok):
    log = _interactions([(u, i) for u in range(num_users) for i in (1, 2)])
    if ok:
        dataset.preprocess(log, split="held_out_users", min_user_interactions=2)
        return
    with pytest.raises(DataError, match=(f"log: held_out_users leaves no validation or test user "
                                         f"among {num_users} users")):
        dataset.preprocess(log, split="held_out_users", min_user_interactions=2)


def test_held_out_cache_round_trip(ratings, tmp_path):
    config = _config(ratings, split="held_out_users", min_user_interactions=2)
    ratings.write_text(RATINGS + "".join(f"{u}::{i}::1::{i}\n" for u in range(40, 50)
                                         for i in (100, 200)))
    first = dataset.load_dataset(config, str(tmp_path / "cache"))
    cached = dataset.load_dataset(config, str(tmp_path / "cache"))
    _assert_same(cached, first)
    np.testing.assert_array_equal(cached.user_split, first.user_split)
    assert cached.split == "held_out_users"


# --- cache: concurrency, damage, unwritable ---------------------------------------------------

_CHILD = """
import fcntl, json, socket, sys
from sine_jax.data import dataset
config, builds, cache, fd = sys.argv[1:]
parent = socket.socket(fileno=int(fd))
flock, build = fcntl.flock, dataset._build

def reporting_flock(f, operation):  # says when it has to wait for the other job's lock
    if operation == fcntl.LOCK_EX:
        try:
            return flock(f, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            parent.sendall(b"waiting")
    return flock(f, operation)

def held_build(*args, **kwargs):  # holds the lock until the parent says go
    with open(builds, "a") as f:
        f.write("build\\n")
    parent.sendall(b"building")
    assert parent.recv(2) == b"go"
    return build(*args, **kwargs)

fcntl.flock, dataset._build = reporting_flock, held_build
data = dataset.load_dataset(json.loads(config), cache)
print(json.dumps([data.item_raw_ids.tolist(), data.items.tolist(), data.summary]))
"""


def test_concurrent_jobs_build_once(ratings, tmp_path):
    """Two jobs start on an empty cache: one takes the lock and builds, held there until the
    other is waiting for the lock; then the second reads what the first built."""
    cache, builds = str(tmp_path / "cache"), str(tmp_path / "builds.txt")
    config = json.dumps(_config(ratings).to_dict())
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sockets = [socket.socketpair() for _ in range(2)]
    jobs = [subprocess.Popen([sys.executable, "-c", _CHILD, config, builds, cache,
                              str(theirs.fileno())], cwd=root, pass_fds=[theirs.fileno()],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _, theirs in sockets]
    events = {}
    try:
        for ours, theirs in sockets:
            theirs.close()
        while len(events) < 2:  # each job says "building" or "waiting" (b"" if it ended)
            waiting = [ours for ours, _ in sockets if ours not in events]
            ready, _, _ = select.select(waiting, [], [], 120)
            assert ready, "no job reached the cache lock in 120 s"
            for ours in ready:
                events[ours] = ours.recv(16)
        assert sorted(events.values()) == [b"building", b"waiting"], events
        builder = next(ours for ours, event in events.items() if event == b"building")
        builder.sendall(b"go")
        for ours in events:  # a second build would find no one to say go
            ours.shutdown(socket.SHUT_RDWR)
        outputs = [job.communicate(timeout=120) for job in jobs]
    finally:
        for job in jobs:
            job.kill()
        for ours, _ in sockets:
            ours.close()
    assert [job.returncode for job in jobs] == [0, 0], outputs
    assert outputs[0][0] == outputs[1][0]
    with open(builds) as f:
        assert f.read() == "build\n"
    assert sorted(os.listdir(cache)) == sorted(
        glob.glob("dataset-*.*", root_dir=cache))  # no temporary leftovers
    _assert_same(dataset.load_dataset(_config(ratings), cache),
                 dataset.load_dataset(_config(ratings), None))


def test_half_written_cache_is_not_used(ratings, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    first = dataset.load_dataset(_config(ratings), cache)
    (json_path,) = glob.glob(os.path.join(cache, "dataset-*.json"))
    os.remove(json_path)  # killed between the npz and the json
    calls = []
    parse = readers.parse_log
    monkeypatch.setattr(readers, "parse_log", lambda *a, **k: calls.append(1) or parse(*a, **k))
    _assert_same(dataset.load_dataset(_config(ratings), cache), first)
    assert calls == [1]


def test_npz_of_another_build_is_not_used(ratings, tmp_path):
    cache = str(tmp_path / "cache")
    first = dataset.load_dataset(_config(ratings), cache)
    other = dataset.load_dataset(_config(ratings, min_user_interactions=5), cache)
    npz = {os.path.getmtime(p): p for p in glob.glob(os.path.join(cache, "dataset-*.npz"))}
    older, newer = (npz[t] for t in sorted(npz))
    with open(newer, "rb") as f:
        content = f.read()
    with open(older, "wb") as f:
        f.write(content)  # the other entry's arrays under this entry's name
    _assert_same(dataset.load_dataset(_config(ratings), cache), first)
    assert other.num_users == 2


def test_killed_builder_leftovers_are_removed(ratings, tmp_path):
    cache = tmp_path / "cache"
    dataset.load_dataset(_config(ratings), str(cache))
    (json_path,) = cache.glob("dataset-*.json")
    prefix = json_path.name.removesuffix(".json")
    os.remove(json_path)
    (cache / f".tmp-{prefix}-abc").mkdir()
    (cache / f".tmp-{prefix}-def").write_bytes(b"partial")
    dataset.load_dataset(_config(ratings), str(cache))
    assert not list(cache.glob(".tmp-*"))


def test_unusable_cache_dir_still_loads(ratings, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    data = dataset.load_dataset(_config(ratings), str(not_a_dir / "cache"))
    assert data.num_users == 4


def test_cache_rebuilds_on_same_size_and_mtime_change_in_a_large_file(tmp_path):
    # Files over 2 MiB are fingerprinted by size, mtime, their first and last MiB and 16
    # blocks of 64 KiB spread over the rest; the first block starts right after the first MiB.
    path = tmp_path / "log.txt"
    lines = [f"{u} {i}\n" for u in range(100_000, 300_000) for i in (1, 2, 3)]
    path.write_text("".join(lines))
    assert os.path.getsize(path) > 3 * 2**20
    cache = str(tmp_path / "cache")
    first = dataset.load_dataset(_config(path, format="interactions"), cache)
    stat = os.stat(path)
    offset = 2**20 + 100
    with open(path, "r+b") as f:
        f.seek(offset)
        line_start = offset + f.read(100).index(b"\n") + 1
        f.seek(line_start)
        f.write(b"9")  # one event of user 1xxxxx becomes a (dropped) event of user 9xxxxx
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    rebuilt = dataset.load_dataset(_config(path, format="interactions"), cache)
    assert first.summary["dropped"]["users_below_min_user_interactions"] == 0
    assert rebuilt.summary["dropped"]["users_below_min_user_interactions"] == 2


def test_cache_without_file_locks(ratings, tmp_path, monkeypatch):
    def no_locks(*args):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(cache_lib.fcntl, "flock", no_locks)
    cache = str(tmp_path / "cache")
    first = dataset.load_dataset(_config(ratings), cache)
    assert len(glob.glob(os.path.join(cache, "dataset-*.npz"))) == 1
    _assert_same(dataset.load_dataset(_config(ratings), cache), first)
