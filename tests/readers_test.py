"""Tests for sine_jax.data.readers."""

import dataclasses
import datetime
import os
import threading

import numpy as np
import polars as pl
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
    with pytest.raises(ConfigError, match="data.format='parquet'.*movielens, interactions"):
        readers.read_interactions(path, "parquet")
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
def test_real_movielens_files(shared_file, relpath, rows, users, items):
    path = shared_file(relpath)
    got = readers.read_interactions(path, "movielens")
    assert len(got) == len(got.items) == len(got.timestamps) == rows
    assert len(np.unique(got.users)) == users
    assert len(np.unique(got.items)) == items
    assert got.num_bad_rows == 0


# --- amazon, taobao, csv ---------------------------------------------------------------------

AMAZON = "A2SUAM1J3GNN3B,0000013714,5.0,1357257600\nAB1,B000ZZZ,4.0,1357257601\n"


def test_amazon_keeps_string_ids(tmp_path):
    got = _read(tmp_path, "ratings_Books.csv", AMAZON, fmt="amazon")
    assert got.users.tolist() == ["A2SUAM1J3GNN3B", "AB1"]
    assert got.items.tolist() == ["0000013714", "B000ZZZ"]  # leading zeros kept
    np.testing.assert_array_equal(got.timestamps, [1357257600, 1357257601])
    assert got.categories is None and got.dropped == {}


def test_taobao_keeps_pv_and_categories(tmp_path):
    text = ("1,10,7,pv,100\n1,11,8,buy,101\n\n2,10,7,pv,50\n2,12,9,fav,51\n2,12,9,cart,52\n"
            "3,13,9,pv,60\n")
    got = _read(tmp_path, "UserBehavior.csv", text, fmt="taobao")
    np.testing.assert_array_equal(got.users, [1, 2, 3])
    np.testing.assert_array_equal(got.items, [10, 10, 13])
    np.testing.assert_array_equal(got.categories, [7, 7, 9])
    np.testing.assert_array_equal(got.timestamps, [100, 50, 60])
    assert got.users.dtype == np.int64
    assert got.dropped == {"events_not_pv": 3}


def test_taobao_without_clicks(tmp_path):
    with pytest.raises(DataError, match=r"b\.csv: no pv \(click\) events among 2 valid rows"):
        _read(tmp_path, "b.csv", "1,2,3,buy,4\n1,2,3,fav,5\n", fmt="taobao")


def test_real_taobao_head(shared_file):
    path = shared_file("taobao-userbehavior-head/UserBehavior_head.csv")
    got = readers.read_interactions(path, "taobao")
    # SOURCE.md: 84,475 rows, pv 75,872; pv users / items 813 / 52,063.
    assert len(got) == 75_872 and got.dropped == {"events_not_pv": 84_475 - 75_872}
    assert (len(np.unique(got.users)), len(np.unique(got.items))) == (813, 52_063)
    assert got.num_bad_rows == 0 and len(got.categories) == len(got)


CSV = 'ts,uid,iid,cat\n5,1,10,a\n3,"1",11,b\n\n4,2,"10",\n'


def test_csv_columns_by_name(tmp_path):
    columns = readers.CsvColumns(user="uid", item="iid", time="ts", category="cat")
    got = _read_csv(tmp_path, CSV, columns)
    np.testing.assert_array_equal(got.users, [1, 1, 2])
    np.testing.assert_array_equal(got.items, [10, 11, 10])
    assert got.users.dtype == got.items.dtype == np.int64  # canonical integers only
    np.testing.assert_array_equal(got.timestamps, [5, 3, 4])
    assert got.categories.tolist() == ["a", "b", None]


def _read_csv(tmp_path, text, columns, name="log.csv", on_bad_row="error"):
    return readers.read_interactions(_write(tmp_path, name, text), "csv", on_bad_row, columns)


def test_csv_string_ids_when_not_canonical_integers(tmp_path):
    columns = readers.CsvColumns(user="u", item="i", time="")
    got = _read_csv(tmp_path, "u;i\n7;007\n8;x y\n7;12\n",
                    dataclasses.replace(columns, separator=";"))
    assert got.users.dtype == np.int64 and got.users.tolist() == [7, 8, 7]
    assert got.items.tolist() == ["007", "x y", "12"]  # '007' is not canonical: strings
    np.testing.assert_array_equal(got.timestamps, [0, 1, 2])  # no time column: file order


def test_csv_missing_column(tmp_path):
    with pytest.raises(DataError, match=(r"log\.csv:1: the header has no column 'user_id' "
                                         r"\(data\.user_column\); found: u, item_id")):
        _read_csv(tmp_path, "u,item_id,timestamp\n", readers.CsvColumns())


def test_csv_bad_config(tmp_path):
    with pytest.raises(ConfigError, match="data.csv_separator=';;'"):
        _read_csv(tmp_path, "a\n", readers.CsvColumns(separator=";;"))
    with pytest.raises(ConfigError, match="data.item_column='' must name a column"):
        _read_csv(tmp_path, "a\n", readers.CsvColumns(item=""))


def test_parquet(tmp_path):
    path = str(tmp_path / "clicks.data")  # detected by content, not by name
    pl.DataFrame({
        "user_id": ["u2", "u1", "u1"], "item_id": [7, 8, 7],
        "timestamp": [datetime.datetime(2020, 3, 29, 0, 0, s) for s in (3, 1, 2)],
        "category_id": [1, None, 1], "other": [0.5, 1.5, 2.5],
    }).write_parquet(path)
    got = readers.read_interactions(path, "csv", columns=readers.CsvColumns(
        category="category_id"))
    assert got.users.tolist() == ["u2", "u1", "u1"]
    assert got.items.dtype == np.int64 and got.items.tolist() == [7, 8, 7]
    np.testing.assert_array_equal(np.diff(got.timestamps), [-2, 1])
    assert got.categories.tolist() == [1, None, 1]


@pytest.mark.parametrize("frame,line,reason", [
    ({"user_id": [1, None], "item_id": [1, 2], "timestamp": [1, 2]}, 2,
     "user id 'null' is not a non-negative integer"),
    ({"user_id": ["a", " "], "item_id": [1, 2], "timestamp": [1, 2]}, 2,
     "user id ' ' is not a non-empty string"),
    ({"user_id": [1, 2], "item_id": [1, -2], "timestamp": [1, 2]}, 2,
     "item id '-2' is not a non-negative integer"),
    ({"user_id": [1, 2], "item_id": [1, 2], "timestamp": ["1", "x"]}, 2,
     "timestamp 'x' is not an integer"),
])
def test_parquet_bad_rows(tmp_path, frame, line, reason):
    path = str(tmp_path / "log.parquet")
    pl.DataFrame(frame).write_parquet(path)
    with pytest.raises(DataError) as e:
        readers.read_interactions(path, "csv")
    assert str(e.value) == f"{path}:{line}: {reason}"
    got = readers.read_interactions(path, "csv", "skip")
    assert (len(got), got.num_bad_rows, got.bad_row_lines) == (1, 1, (line,))


def test_parquet_missing_or_unusable_column(tmp_path):
    path = str(tmp_path / "log.parquet")
    pl.DataFrame({"user_id": [1], "item_id": [1.5], "t": [1]}).write_parquet(path)
    with pytest.raises(DataError, match=(r"log\.parquet: no column 'timestamp' "
                                         r"\(data\.time_column\); found: user_id, item_id, t$")):
        readers.read_interactions(path, "csv", columns=readers.CsvColumns(item="user_id"))
    with pytest.raises(DataError, match=r"column 'item_id' \(data\.item_column\) has type "
                                        r"Float64; expected integers or strings"):
        readers.read_interactions(path, "csv", columns=readers.CsvColumns(time="t"))


@pytest.mark.parametrize("name,fmt,text,line,reason", [
    ("a.csv", "amazon", "A1,B1,5.0,1\nA1,B2,5.0\n", 2,
     "expected 4 fields separated by ',', found 3"),
    ("b.csv", "amazon", "A1,B1,5.0,1\n,B2,5.0,2\n", 2, "user id '' is not a non-empty string"),
    ("c.csv", "amazon", "A1,B1,5.0,1\nA1,B2,5.0,yesterday\n", 2,
     "timestamp 'yesterday' is not an integer"),
    ("d.csv", "amazon", "A1,B1,five,1\n", 1, "rating 'five' is not a number"),
    ("e.csv", "taobao", "1,2,3,pv,4\n\n1,2,3,pv,4,5\n", 3,
     "expected 5 fields separated by ',', found 6"),
    ("f.csv", "taobao", "1,2,3,pv,4\nu1,2,3,pv,4\n", 2,
     "user id 'u1' is not a non-negative integer"),
    ("g.csv", "taobao", "1,2,c3,pv,4\n", 1, "category id 'c3' is not a non-negative integer"),
    ("h.csv", "taobao", "1,2,3,click,4\n", 1, "behavior 'click' is not one of pv, buy, cart, fav"),
    ("i.csv", "taobao", "1,2,3,pv,1.5e9\n", 1, "timestamp '1.5e9' is not an integer"),
    ("j.csv", "taobao", "1,2,3,pv,4\n1,\xff\xfe,3,pv,4\n", 2,
     "item id '\ufffd\ufffd' is not a non-negative integer"),
    ("k.csv", "csv", "user_id,item_id,timestamp\n1,2,3\n1,2\n", 3,
     "expected 3 fields separated by ',', found 2"),
    ("l.csv", "csv", "\n\nuser_id,item_id,timestamp\n1,,3\n", 4,
     "item id '' is not a non-empty string"),
    ("m.csv", "csv", 'user_id,item_id,timestamp\n1,2,"3"\n1,2,"x"\n', 3,
     "timestamp 'x' is not an integer"),
])
def test_new_format_bad_rows(tmp_path, name, fmt, text, line, reason):
    path = _write(tmp_path, name, text)
    with pytest.raises(DataError) as e:
        readers.read_interactions(path, fmt)
    assert str(e.value) == f"{path}:{line}: {reason}"


def test_skip_reports_new_formats(tmp_path):
    rows = ["1,2,3,pv,4"] * 3 + ["1,2,3,pv"] + ["1,x,3,pv,4"] * 2 + ["2,2,3,pv,5"]
    got = _read(tmp_path, "t.csv", "\xef\xbb\xbf" + "\n".join(rows) + "\n", fmt="taobao",
                on_bad_row="skip")
    assert (len(got), got.num_bad_rows, got.bad_row_lines) == (4, 3, (4, 5, 6))


def test_unwritable_work_dir_is_a_data_error(tmp_path):
    path = _write(tmp_path, "t.csv", "1,2,3,pv,4\n")
    with pytest.raises(DataError, match=r"t\.csv: parsing into .*missing failed: "):
        readers.parse_log(path, "taobao", str(tmp_path / "missing"))


def test_a_pipe_as_the_data_file_is_refused_not_read(tmp_path):
    """Reading a FIFO blocks until a writer comes; before, `data.path` pointing at one hung.
    (Should the check go, a thread keeps opening the FIFO for writing after a while, so that
    every read ends and the test fails instead of hanging.)"""
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    done = threading.Event()

    def unblock_readers():
        done.wait(20)
        while not done.wait(0.1):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a reader sees EOF
            except OSError:  # no reader at the moment
                pass

    thread = threading.Thread(target=unblock_readers, daemon=True)
    thread.start()
    try:
        with pytest.raises(DataError, match=r"log.fifo: not a regular file \(a pipe, socket"):
            readers.read_interactions(str(fifo), "interactions")
    finally:
        done.set()
        thread.join()


def test_control_characters_of_a_field_are_escaped_in_the_message(tmp_path):
    path = _write(tmp_path, "log.txt", "1 2\n1 \x1b[2J\x1b[31mred\n")
    with pytest.raises(DataError) as err:
        readers.read_interactions(path, "interactions")
    message = str(err.value)
    assert message.endswith(r"log.txt:2: item id '\x1b[2J\x1b[31mred' is not a non-negative "
                            "integer")
    assert "\x1b" not in message


@pytest.mark.parametrize("fmt, header", [
    ("csv", "user_id,item_id,item_id,timestamp"),
    ("movielens", "userId,movieId,rating,timestamp,userId"),
])
def test_a_repeated_header_column_is_an_error(tmp_path, fmt, header):
    """Before, the first of the two columns was used silently."""
    path = _write(tmp_path, "log.csv", f"{header}\n1,2,3,4,5\n")
    with pytest.raises(DataError, match=r"log.csv:1: the header names column '\w+' 2 times"):
        readers.read_interactions(path, fmt)
