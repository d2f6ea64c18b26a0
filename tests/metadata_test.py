"""Tests for sine_jax.data.metadata."""

import json

import pytest

from sine_jax.data import metadata
from sine_jax.errors import DataError


def _write(directory, name, text, encoding="latin-1"):
    (directory / name).write_bytes(text.encode(encoding))


def _ratings(directory):
    path = directory / "ratings.dat"
    path.write_text("1::1::5::1\n")
    return str(path)


def test_movies_dat_latin1(tmp_path):
    _write(tmp_path, "movies.dat", "1::Misérables, Les (1995)::Drama|War\n"
                                   "2::A::B (1999)::Comedy\n\n3::Nothing (2000)::\n")
    got = metadata.read_item_metadata(_ratings(tmp_path))
    assert got.titles == {1: "Misérables, Les (1995)", 2: "A::B (1999)", 3: "Nothing (2000)"}
    assert got.genres == {1: ("Drama", "War"), 2: ("Comedy",), 3: ()}
    assert got.genre_names == ("Comedy", "Drama", "War")


def test_u_item_with_u_genre(tmp_path):
    _write(tmp_path, "u.genre", "unknown|0\nAction|1\nCrime|2\n\n")
    _write(tmp_path, "u.item", "1|Café (1995)|01-Jan-1995||http://x|0|1|1\n"
                               "2|Other (1996)|||http://y|1|0|0\n")
    got = metadata.read_item_metadata(str(tmp_path / "u.data"))
    assert got.titles == {1: "Café (1995)", 2: "Other (1996)"}
    assert got.genres == {1: ("Action", "Crime"), 2: ("unknown",)}
    assert got.genre_names == ("unknown", "Action", "Crime")


def test_u_item_without_u_genre_uses_standard_names(tmp_path):
    flags = ["0"] * 19
    flags[3] = "1"
    _write(tmp_path, "u.item", "7|Toons (1995)|||url|" + "|".join(flags) + "\n")
    got = metadata.read_item_metadata(str(tmp_path / "u.data"))
    assert got.genres == {7: ("Animation",)}
    assert got.genre_names == metadata.ML100K_GENRES


def test_movies_csv_quoted_utf8(tmp_path):
    _write(tmp_path, "movies.csv", '\ufeffmovieId,title,genres\n1,"City, The (Cité) (1995)",A|B\n'
                                   "2,Plain (2001),(no genres listed)\n", encoding="utf-8")
    got = metadata.read_item_metadata(str(tmp_path / "ratings.csv"))
    assert got.titles == {1: "City, The (Cité) (1995)", 2: "Plain (2001)"}
    assert got.genres == {1: ("A", "B"), 2: ()}
    assert got.genre_names == ("A", "B")


def test_no_companion(tmp_path):
    assert metadata.read_item_metadata(_ratings(tmp_path)) is None


@pytest.mark.parametrize("name,text,message", [
    ("movies.dat", "1::A::B\nx::T::G\n", r"movies\.dat:2: item id 'x' is not a non-negative"),
    ("movies.dat", "1::A::B\n2::no genres\n", r"movies\.dat:2: expected id::title::genres"),
    ("u.item", "1|A|||u|0|1\n", r"u\.item:1: expected 24 fields separated by '\|', found 7"),
    ("movies.csv", "movieId,title,genres\n1,A,B\n\n2,B\n", r"movies\.csv:4: expected 3 fields"),
    ("movies.csv", "id,name,genres\n", r"movies\.csv:1: expected the header movieId,title"),
])
def test_malformed(tmp_path, name, text, message):
    _write(tmp_path, name, text)
    with pytest.raises(DataError, match=message):
        metadata.read_item_metadata(_ratings(tmp_path))


def test_bad_u_item_flag(tmp_path):
    _write(tmp_path, "u.genre", "a|0\nb|1\n")
    _write(tmp_path, "u.item", "1|A|||u|0|1\n2|B|||u|0|2\n")
    with pytest.raises(DataError, match=r"u\.item:2: genre flags must be 0 or 1"):
        metadata.read_item_metadata(str(tmp_path / "u.data"))


@pytest.mark.parametrize("relpath,num_items,num_genres,item,title,genres", [
    ("ml-1m-subset/ratings_cs100_subset.dat", 3_883, 18, 1, "Toy Story (1995)",
     ("Animation", "Children's", "Comedy")),
    ("ml-1m-subset/ratings_cs100_subset.dat", 3_883, 18, 73, "Misérables, Les (1995)",
     ("Drama", "Musical")),
    ("ml-100k/u.data", 1_682, 19, 1, "Toy Story (1995)", ("Animation", "Children's", "Comedy")),
    ("ml-latest-small/ratings.csv", 9_125, 19, 73, "Misérables, Les (1995)", ("Drama", "War")),
])
def test_real_companions(shared_file, relpath, num_items, num_genres, item, title, genres):
    path = shared_file(relpath)
    got = metadata.read_item_metadata(path)
    assert len(got.titles) == len(got.genres) == num_items
    assert len(got.genre_names) == num_genres
    assert got.titles[item] == title
    assert got.genres[item] == genres


def test_item2attributes_category_is_the_first_level_that_splits_the_items(tmp_path):
    """Brand first (ignored), then a level every item shares (ignored), then the category."""
    attributes = {str(i): [100 + i, 2, 10 + i % 3, 50 + i] for i in range(1, 101)}
    attributes["7"] = [5, 2]  # no category level
    (tmp_path / "Toys.txt").write_text("1 1 2 3\n")
    (tmp_path / "Toys_item2attributes.json").write_text(json.dumps(attributes))
    got = metadata.read_item_metadata(str(tmp_path / "Toys.txt"))
    assert got.genres[1] == ("attribute 11",) and got.genres[3] == ("attribute 10",)
    assert got.genres[7] == ()
    assert got.genre_names == ("attribute 10", "attribute 11", "attribute 12")
    assert got.titles == {}


@pytest.mark.parametrize("text,message", [
    ("[1, 2]", "expected an object"),
    ('{"x": [1]}', "item id 'x'"),
    ('{"1": "a"}', "item 1: expected a list"),
    ("{", "not valid JSON"),
])
def test_malformed_item2attributes(tmp_path, text, message):
    (tmp_path / "Toys.txt").write_text("1 1 2 3\n")
    (tmp_path / "Toys_item2attributes.json").write_text(text)
    with pytest.raises(DataError, match=message):
        metadata.read_item_metadata(str(tmp_path / "Toys.txt"))


def test_real_item2attributes(shared_file):
    path = shared_file("amazon-toys-s3rec/Toys_and_Games.txt")
    got = metadata.read_item_metadata(path)
    assert len(got.genres) == 11_924 and len(got.genre_names) == 19
