"""Tests for sine_jax.data.readers."""

import os

import numpy as np
import pytest

from sine_jax.data import readers
from sine_jax.errors import ConfigError, DataError


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    return str(path)


def _read(tmp_path, name, text, fmt="movielens", on_bad_row="error"):
    return readers.read_interactions(_write(tmp_path, name, text), fmt, on_bad_row)


@pytest.mark.parametrize("name,text", [
    ("ratings.dat", "1::10::5::100\n1::11::3::99\n2::10::4::50\n"),
    ("u.data", "1\t10\t5\t100\n1\t11\t3\t99\n2\t10\t4\t50\n"),
    ("ratings.csv", "userId,movieId,rating,timestamp\n1,10,5.0,100\n1,11,3.5,99\n2,10,4,50\n"),
    ("headerless.csv", "1,10,5.0,100\n1,11,3.5,99\n2,10,4,50\n"),
    ("crlf.dat", "1::10::5::100\r\n1::11::3::99\r\n\r\n2::10::4::50\r\n"),
])
def test_movielens_variants(tmp_path, name, text):
    got = _read(tmp_path, name, text)
    np.testing.assert_array_equal(got.users, [1, 1, 2])
    np.testing.assert_array_equal(got.items, [10, 11, 10])
    np.testing.assert_array_equal(got.timestamps, [100, 99, 50])
    assert got.users.dtype == got.items.dtype == got.timestamps.dtype == np.int64
    assert (got.num_bad_rows, got.bad_row_lines) == (0, ())
    assert got.path.endswith(name)


def test_utf8_byte_order_mark(tmp_path):
    path = tmp_path / "r.csv"
    path.write_bytes(b"\xef\xbb\xbfuserId,movieId,rating,timestamp\n1,10,5.0,100\n")
    got = readers.read_interactions(str(path), "movielens")
    np.testing.assert_array_equal(got.items, [10])


def test_csv_header_columns_by_name(tmp_path):
    got = _read(tmp_path, "r.csv", "timestamp,movieId,userId\n100,10,1\n7,11,2\n")
    np.testing.assert_array_equal(got.users, [1, 2])
    np.testing.assert_array_equal(got.items, [10, 11])
    np.testing.assert_array_equal(got.timestamps, [100, 7])


def test_csv_header_missing_column(tmp_path):
    with pytest.raises(DataError, match=r"r\.csv:1: the header has no column movieId"):
        _read(tmp_path, "r.csv", "userId,itemId,rating,timestamp\n1,2,3,4\n")


def test_csv_header_only(tmp_path):
    with pytest.raises(DataError, match="no data rows after the header"):
        _read(tmp_path, "r.csv", "userId,movieId,rating,timestamp\n")


def test_interactions_format_uses_row_order(tmp_path):
    got = _read(tmp_path, "seq.txt", "3 7\n3 5\n\n1 7\n", fmt="interactions")
    np.testing.assert_array_equal(got.users, [3, 3, 1])
    np.testing.assert_array_equal(got.items, [7, 5, 7])
    np.testing.assert_array_equal(got.timestamps, [0, 1, 2])


def test_sequences_format(tmp_path):
    got = _read(tmp_path, "s.txt", "1 5 6 7\n2 9\n1  8\t4\n", fmt="sequences")
    np.testing.assert_array_equal(got.users, [1, 1, 1, 2, 1, 1])
    np.testing.assert_array_equal(got.items, [5, 6, 7, 9, 8, 4])
    np.testing.assert_array_equal(got.timestamps, np.arange(6))


def test_missing_path(tmp_path):
    path = str(tmp_path / "nope.dat")
    with pytest.raises(DataError, match=f"^{path}: no such file$"):
        readers.read_interactions(path, "movielens")


def test_directory_path(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        readers.read_interactions(str(tmp_path), "movielens")


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
@pytest.mark.parametrize("fmt", readers.FORMATS)
def test_empty_file(tmp_path, text, fmt):
    with pytest.raises(DataError, match=r"e\.txt: file is empty$"):
        _read(tmp_path, "e.txt", text, fmt=fmt)


@pytest.mark.parametrize("name,fmt,text,line,reason", [
    ("a.dat", "movielens", "1::2::3::4\n1::2::3\n", 2,
     "expected 4 fields separated by '::', found 3"),
    ("b.dat", "movielens", "1::2::3::4\n\n1::2::3::4::5\n", 3,
     "expected 4 fields separated by '::', found 5"),
    ("c.dat", "movielens", "1::2::3::4\nx::2::3::4\n", 2,
     "user id 'x' is not a non-negative integer"),
    ("d.dat", "movielens", "1::2::3::4\n1::2.5::3::4\n", 2,
     "item id '2.5' is not a non-negative integer"),
    ("e.dat", "movielens", "1::2::3::4\n1::2::3::4x\n", 2, "timestamp '4x' is not an integer"),
    ("f.dat", "movielens", "1::2::3::4\n1::2::three::4\n", 2, "rating 'three' is not a number"),
    ("g.data", "movielens", "1\t2\t3\t4\n1\t2\t3\n", 2,
     "expected 4 fields separated by whitespace, found 3"),
    ("h.csv", "movielens", "userId,movieId,rating,timestamp\n1,2,3,4\n1,2,3,1e9\n", 3,
     "timestamp '1e9' is not an integer"),
    ("i.txt", "interactions", "1 2\n1 2 3\n", 2,
     "expected 2 fields separated by whitespace, found 3"),
    ("j.txt", "interactions", "1 2\n-1 2\n", 2, "user id '-1' is not a non-negative integer"),
    ("k.txt", "sequences", "1 2 3\n4\n", 2,
     "expected a user id and at least one item id, found 1 fields"),
    ("l.txt", "sequences", "1 2 3\n4 5 six 7\n", 2, "item id 'six' is not a non-negative integer"),
    ("m.txt", "sequences", "u1 2 3\n", 1, "user id 'u1' is not a non-negative integer"),
])
def test_bad_row_errors(tmp_path, name, fmt, text, line, reason):
    path = _write(tmp_path, name, text)
    with pytest.raises(DataError) as e:
        readers.read_interactions(path, fmt)
    assert str(e.value) == f"{path}:{line}: {reason}"


def test_skip_counts_bad_rows(tmp_path):
    lines = ["1::10::5::100"] * 3 + ["oops"] + ["2::11::3::7"] * 10 + ["2::x::1::1"] * 12
    got = _read(tmp_path, "r.dat", "\n".join(lines) + "\n", on_bad_row="skip")
    assert len(got) == 13
    assert got.num_bad_rows == 13
    assert got.bad_row_lines == (4, 15, 16, 17, 18, 19, 20, 21, 22, 23)


def test_skip_sequences_counts_lines(tmp_path):
    got = _read(tmp_path, "s.txt", "1 2 3\n2 x y\n3 4\n", fmt="sequences", on_bad_row="skip")
    np.testing.assert_array_equal(got.items, [2, 3, 4])
    assert (got.num_bad_rows, got.bad_row_lines) == (1, (2,))


def test_skip_with_no_valid_row(tmp_path):
    with pytest.raises(DataError, match=r"no valid rows \(2 bad rows"):
        _read(tmp_path, "r.dat", "a::b::c::d\n1::2\n", on_bad_row="skip")


def test_unknown_format_and_mode(tmp_path):
    path = _write(tmp_path, "r.dat", "1::2::3::4\n")
    with pytest.raises(ConfigError, match="data.format='amazon'.*movielens, interactions"):
        readers.read_interactions(path, "amazon")
    with pytest.raises(ConfigError, match="data.on_bad_row='warn'.*error, skip"):
        readers.read_interactions(path, "movielens", "warn")


def test_error_messages_are_one_line(tmp_path):
    with pytest.raises(DataError) as e:
        _read(tmp_path, "r.dat", "1::2::3::4\n1::2::3::4::\n")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("relpath,rows,users,items", [
    ("ml-1m-subset/ratings_cs100_subset.dat", 487_650, 2_999, 3_615),
    ("ml-100k/u.data", 100_000, 943, 1_682),
    ("ml-latest-small/ratings.csv", 100_004, 671, 9_066),
])
def test_real_movielens_files(shared_data, relpath, rows, users, items):
    path = os.path.join(shared_data, relpath)
    if not os.path.exists(path):
        pytest.skip(f"{path} is not present")
    got = readers.read_interactions(path, "movielens")
    assert len(got) == len(got.items) == len(got.timestamps) == rows
    assert len(np.unique(got.users)) == users
    assert len(np.unique(got.items)) == items
    assert got.num_bad_rows == 0
