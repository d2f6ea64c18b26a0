"""Item metadata (titles, genres or categories) from the companion file beside an
interactions file.

Companions, looked for in this order in the directory of the interactions file:
  STEM_item2attributes.json (STEM: the interactions file's name without its extension): the
    S3-Rec benchmark files' `{"item id": [attribute id, ...]}` (brand first, then the levels
    of the item's category path). An item's category is its attribute at the first list
    position, after the brand's, at which the items are not (nearly) all the same: the
    coarsest level that splits the catalogue (Toys_and_Games: position 2, 19 categories).
    No titles.
  movies.dat: `id::title::G1|G2` (ML-1M, latin-1).
  u.item: `id|title|release|video release|url|f1|...|f19` (ML-100K, latin-1), genre flags in the
    order of `u.genre` beside it (`name|index` lines; the standard ML-100K names if absent).
  movies.csv: header `movieId,title,genres`, genres `|`-separated (ml-latest, UTF-8).
"(no genres listed)" means no genre. A malformed line is a `DataError` naming `path:line`.
"""

import collections
import csv
import dataclasses
import json
import os

from absl import logging

from sine_jax.errors import DataError

COMPANIONS = ("movies.dat", "u.item", "movies.csv")
ATTRIBUTES_SUFFIX = "_item2attributes.json"
# An attribute position whose most common value covers at least this share of the items does
# not split the catalogue (S3-Rec's files: the top category level below the dataset's own).
_UNSPLIT_SHARE = 0.99
NO_GENRES = "(no genres listed)"
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)
_U_ITEM_FIXED_FIELDS = 5  # id, title, release date, video release date, IMDb URL


@dataclasses.dataclass(frozen=True)
class ItemMetadata:
    """Titles and genres by raw item id.

    Attributes:
        titles: raw item id -> title.
        genres: raw item id -> its genres, in the file's order (the first is its category).
        genre_names: every genre name, in a fixed order (u.genre's order; else sorted).
    """

    titles: dict[int, str]
    genres: dict[int, tuple[str, ...]]
    genre_names: tuple[str, ...]


def companion_files(interactions_path: str) -> list[str]:
    """The files `read_item_metadata` reads (see the module docstring): STEM_item2attributes.json,
    else the first of `COMPANIONS` beside `interactions_path` (and u.genre beside a u.item, when
    present); [] if none."""
    path = os.path.abspath(os.fspath(interactions_path))
    attributes = os.path.splitext(path)[0] + ATTRIBUTES_SUFFIX
    if os.path.isfile(attributes):
        return [attributes]
    directory = os.path.dirname(path)
    for name in COMPANIONS:
        companion = os.path.join(directory, name)
        if os.path.isfile(companion):
            genre = os.path.join(directory, "u.genre")
            return [companion] + ([genre] if name == "u.item" and os.path.isfile(genre) else [])
    return []


def read_item_metadata(interactions_path: str) -> ItemMetadata | None:
    """Reads the first companion beside `interactions_path` (see the module docstring); None
    if there is none."""
    files = companion_files(interactions_path)
    if not files:
        return None
    if files[0].endswith(ATTRIBUTES_SUFFIX):
        metadata = _read_item2attributes(files[0])
        logging.info("%s: categories of %d items", files[0], len(metadata.genres))
        return metadata
    metadata = _READERS[os.path.basename(files[0])](files[0])
    logging.info("%s: titles and genres of %d items", files[0], len(metadata.titles))
    return metadata


def _read_text(path: str, encoding: str) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from e
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _lines(path: str, encoding: str) -> list[str]:
    """Every line, blank ones included, without line ends."""
    return [line.rstrip("\r") for line in _read_text(path, encoding).split("\n")]


def _numbered_lines(path: str, encoding: str):
    """(1-based line number, line) for each non-blank line."""
    for number, line in enumerate(_lines(path, encoding), start=1):
        if line.strip():
            yield number, line


def _item_id(text: str, path: str, number: int) -> int:
    text = text.strip()
    if not text.isdigit():
        raise DataError(f"{path}:{number}: item id '{text}' is not a non-negative integer")
    return int(text)


def _split_genres(text: str) -> tuple[str, ...]:
    text = text.strip()
    if text == NO_GENRES:
        return ()
    return tuple(g for g in text.split("|") if g)


def _read_movies_dat(path: str) -> ItemMetadata:
    titles, genres = {}, {}
    for number, line in _numbered_lines(path, "latin-1"):
        fields = line.split("::")
        if len(fields) < 3:
            raise DataError(f"{path}:{number}: expected id::title::genres, found "
                            f"{len(fields)} fields separated by '::'")
        item = _item_id(fields[0], path, number)
        titles[item] = "::".join(fields[1:-1])
        genres[item] = _split_genres(fields[-1])
    return ItemMetadata(titles, genres, _sorted_genres(genres))


def _read_movies_csv(path: str) -> ItemMetadata:
    rows = csv.reader(_lines(path, "utf-8-sig"))  # rows.line_num = the file line number
    try:
        header = next(rows)
    except StopIteration:
        raise DataError(f"{path}: file is empty") from None
    header = [h.strip() for h in header]
    if not {"movieId", "title", "genres"} <= set(header):
        raise DataError(f"{path}:1: expected the header movieId,title,genres, found {header}")
    columns = [header.index(c) for c in ("movieId", "title", "genres")]
    titles, genres = {}, {}
    for row in rows:
        number = rows.line_num
        if not any(field.strip() for field in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{number}: expected {len(header)} fields separated by ',', "
                            f"found {len(row)}")
        item = _item_id(row[columns[0]], path, number)
        titles[item] = row[columns[1]]
        genres[item] = _split_genres(row[columns[2]])
    return ItemMetadata(titles, genres, _sorted_genres(genres))


def _read_u_item(path: str) -> ItemMetadata:
    names = _read_u_genre(os.path.join(os.path.dirname(path), "u.genre"))
    titles, genres = {}, {}
    for number, line in _numbered_lines(path, "latin-1"):
        fields = line.split("|")
        if len(fields) != _U_ITEM_FIXED_FIELDS + len(names):
            raise DataError(f"{path}:{number}: expected {_U_ITEM_FIXED_FIELDS + len(names)} "
                            f"fields separated by '|', found {len(fields)}")
        item = _item_id(fields[0], path, number)
        flags = [f.strip() for f in fields[_U_ITEM_FIXED_FIELDS:]]
        if not set(flags) <= {"0", "1"}:
            raise DataError(f"{path}:{number}: genre flags must be 0 or 1, found {flags}")
        titles[item] = fields[1]
        genres[item] = tuple(n for n, flag in zip(names, flags) if flag == "1")
    return ItemMetadata(titles, genres, names)


def _read_item2attributes(path: str) -> ItemMetadata:
    """Categories from an S3-Rec `item2attributes` file (see the module docstring)."""
    try:
        table = json.loads(_read_text(path, "utf-8"))
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(table, dict):
        raise DataError(f"{path}: expected an object {{\"item id\": [attribute ids]}}")
    attributes = {}
    for key, values in table.items():
        if not key.isdigit():
            raise DataError(f"{path}: item id {key!r} is not a non-negative integer")
        if not isinstance(values, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            raise DataError(f"{path}: item {key}: expected a list of integer attribute ids")
        attributes[int(key)] = values
    position = _category_position(attributes)
    genres = {
        item: (f"attribute {values[position]}",) if len(values) > position else ()
        for item, values in attributes.items()
    }
    return ItemMetadata({}, genres, _sorted_genres(genres))


def _category_position(attributes: dict[int, list[int]]) -> int:
    """The first list position after the brand's (0) whose most common value covers less
    than _UNSPLIT_SHARE of the items that have it (the last position if none does)."""
    longest = max((len(v) for v in attributes.values()), default=1)
    for position in range(1, longest):
        values = [v[position] for v in attributes.values() if len(v) > position]
        top = collections.Counter(values).most_common(1)[0][1]
        if top < _UNSPLIT_SHARE * len(values):
            return position
    return max(longest - 1, 0)


def _read_u_genre(path: str) -> tuple[str, ...]:
    """Genre names ordered by their index (`name|index` lines); ML100K_GENRES if no file."""
    if not os.path.isfile(path):
        logging.warning("%s is missing; using the standard ML-100K genre names", path)
        return ML100K_GENRES
    by_index = {}
    for number, line in _numbered_lines(path, "latin-1"):
        name, _, index = line.rpartition("|")
        if not name or not index.strip().isdigit():
            raise DataError(f"{path}:{number}: expected name|index, found {line!r}")
        by_index[int(index)] = name
    if sorted(by_index) != list(range(len(by_index))):
        raise DataError(f"{path}: genre indices must be 0..{len(by_index) - 1}, "
                        f"found {sorted(by_index)}")
    return tuple(by_index[i] for i in range(len(by_index)))


def _sorted_genres(genres: dict[int, tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(sorted({g for gs in genres.values() for g in gs}))


_READERS = {"movies.dat": _read_movies_dat, "u.item": _read_u_item, "movies.csv": _read_movies_csv}
