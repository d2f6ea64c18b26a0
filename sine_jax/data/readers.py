"""Readers of interaction logs into flat (user, item, timestamp) arrays.

Formats (`data.format`):
  movielens: GroupLens ratings, detected from the content: `ratings.dat` (`u::i::r::t`),
    `u.data` (`u i r t`, tab or space separated) or `ratings.csv` (comma separated, with a
    header naming `userId`, `movieId`, `timestamp`, or the four columns in that order without
    one). Every rating is an implicit interaction.
  interactions: the SASRec text format, one `user item` pair per line, file order = time order.
  sequences: the S3-Rec text format, `user item item ...` per line, in time order.
Formats without timestamps get the row order 0..N-1 as time.

Parsing is vectorised with polars. A bad row (wrong field count, an id that is not a
non-negative integer, a timestamp that is not an integer, a rating that is not a number) is a
`DataError` naming `path:line` (1-based), or with `on_bad_row="skip"` is dropped and counted.
Blank lines and a UTF-8 byte-order mark are ignored.
"""

import codecs
import dataclasses
import os

import numpy as np
import polars as pl
from absl import logging

from sine_jax.errors import ConfigError, DataError

FORMATS = ("movielens", "interactions", "sequences")
ON_BAD_ROW = ("error", "skip")
_MAX_REPORTED_LINES = 10
_DETECT_LINES = 10  # movielens: the variant is detected from this many first lines


@dataclasses.dataclass(frozen=True, eq=False)
class Interactions:
    """A flat interaction log, in file order.

    Attributes:
        users: [N] int64 raw user ids.
        items: [N] int64 raw item ids.
        timestamps: [N] int64; formats without time use the row order 0..N-1.
        path: where it was read from.
        num_bad_rows: rows dropped by `on_bad_row="skip"`.
        bad_row_lines: the first <= 10 bad line numbers (1-based).
    """

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    path: str
    num_bad_rows: int = 0
    bad_row_lines: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.users)


def read_interactions(path: str, fmt: str, on_bad_row: str = "error") -> Interactions:
    """Reads an interaction log.

    Args:
        path: the file.
        fmt: one of `FORMATS`.
        on_bad_row: "error" (raise on the first bad row) or "skip" (drop and count bad rows).

    Returns:
        The valid rows, in file order.

    Raises:
        ConfigError: unknown `fmt` or `on_bad_row`.
        DataError: missing, unreadable or empty file; a bad row when `on_bad_row="error"`;
            no valid row at all.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"data.format={fmt!r} has no reader; allowed: {', '.join(FORMATS)}")
    if on_bad_row not in ON_BAD_ROW:
        raise ConfigError(
            f"data.on_bad_row={on_bad_row!r} is not allowed; allowed: {', '.join(ON_BAD_ROW)}"
        )
    path = os.fspath(path)
    lines = _read_lines(path)
    if fmt == "movielens":
        good, bad = _parse_movielens(lines, path)
    elif fmt == "interactions":
        good, bad = _parse_delimited(lines, None, {"user": 0, "item": 1}, 2)
    else:
        good, bad = _parse_sequences(lines)
    if len(bad) and on_bad_row == "error":
        raise DataError(f"{path}:{bad['line'][0]}: {bad['reason'][0]}")
    bad_lines = tuple(int(x) for x in bad["line"][:_MAX_REPORTED_LINES])
    num_bad = len(bad)
    if not len(good):
        raise DataError(f"{path}: no valid rows ({num_bad} bad rows, first at lines {bad_lines})")
    if num_bad:
        logging.warning("%s: skipped %d bad rows (first at lines %s); first: line %d: %s",
                        path, num_bad, bad_lines, bad["line"][0], bad["reason"][0])
    timestamps = (good["timestamp"].to_numpy().astype(np.int64) if "timestamp" in good.columns
                  else np.arange(len(good), dtype=np.int64))
    return Interactions(
        users=good["user"].to_numpy().astype(np.int64),
        items=good["item"].to_numpy().astype(np.int64),
        timestamps=timestamps,
        path=path,
        num_bad_rows=num_bad,
        bad_row_lines=bad_lines,
    )


def _read_lines(path: str) -> pl.DataFrame:
    """The non-blank lines of a file: `line` (1-based number) and `text` (no line end)."""
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, not a file")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from e
    raw = raw.removeprefix(codecs.BOM_UTF8)
    text = pl.Series("text", [raw.decode("latin-1")]).str.split("\n").explode()
    lines = (pl.DataFrame({"text": text.str.strip_chars_end("\r")})
             .with_row_index("line", offset=1)
             .filter(pl.col("text").str.strip_chars() != ""))
    if not len(lines):
        raise DataError(f"{path}: file is empty")
    return lines


def _int_field(fields: pl.Expr, index: int) -> pl.Expr:
    return fields.list.get(index, null_on_oob=True).str.strip_chars().cast(pl.Int64, strict=False)


def _raw_field(index: int) -> pl.Expr:
    return pl.col("fields").list.get(index, null_on_oob=True)


def _parse_delimited(lines: pl.DataFrame, sep: str | None, columns: dict[str, int],
                     num_fields: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parses rows of a fixed number of fields.

    Args:
        lines: `line`, `text` from `_read_lines`.
        sep: the field separator; None = runs of whitespace.
        columns: field index of "user", "item" and optionally "timestamp", "rating".
        num_fields: the number of fields every row must have.

    Returns:
        (valid rows: `user`, `item`[, `timestamp`]; bad rows: `line`, `reason`), in file order.
    """
    fields = (pl.col("text").str.extract_all(r"\S+") if sep is None
              else pl.col("text").str.split(sep))
    parsed = lines.with_columns(fields.alias("fields")).with_columns(
        pl.col("fields").list.len().alias("num_fields"),
        *[_int_field(pl.col("fields"), columns[c]).alias(c)
          for c in ("user", "item", "timestamp") if c in columns],
    )
    checks = [
        (pl.col("num_fields") != num_fields,
         pl.format(f"expected {num_fields} fields {_describe(sep)}, found {{}}",
                   pl.col("num_fields"))),
        (pl.col("user").is_null() | (pl.col("user") < 0),
         pl.format("user id '{}' is not a non-negative integer", _raw_field(columns["user"]))),
        (pl.col("item").is_null() | (pl.col("item") < 0),
         pl.format("item id '{}' is not a non-negative integer", _raw_field(columns["item"]))),
    ]
    if "timestamp" in columns:
        checks.append((pl.col("timestamp").is_null(),
                       pl.format("timestamp '{}' is not an integer",
                                 _raw_field(columns["timestamp"]))))
    if "rating" in columns:
        rating = _raw_field(columns["rating"]).str.strip_chars().cast(pl.Float64, strict=False)
        checks.append((~rating.is_finite().fill_null(False),
                       pl.format("rating '{}' is not a number", _raw_field(columns["rating"]))))
    good, bad = _split_by_checks(parsed, checks)
    return good.select(c for c in ("user", "item", "timestamp") if c in columns), bad


def _split_by_checks(parsed: pl.DataFrame, checks: list[tuple[pl.Expr, pl.Expr]]
                     ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Splits rows into (valid rows, bad rows with `line` and `reason`).

    Args:
        parsed: rows with a `line` column.
        checks: (failure condition, message) pairs; a bad row gets the first failing message.
            Messages are formatted for the (few) bad rows only.
    """
    failing = [cond.fill_null(False) for cond, _ in checks]
    parsed = parsed.with_columns(pl.any_horizontal(failing).alias("_bad"))
    reason = pl.when(failing[0]).then(checks[0][1])
    for cond, (_, message) in zip(failing[1:], checks[1:]):
        reason = reason.when(cond).then(message)
    bad = parsed.filter("_bad").select("line", reason.alias("reason"))
    return parsed.filter(~pl.col("_bad")), bad


def _describe(sep: str | None) -> str:
    return "separated by whitespace" if sep is None else f"separated by {sep!r}"


def _parse_movielens(lines: pl.DataFrame, path: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Detects ratings.dat / u.data / ratings.csv from the first lines and parses the rows."""
    head = lines["text"][:_DETECT_LINES].to_list()
    u_i_r_t = {"user": 0, "item": 1, "rating": 2, "timestamp": 3}
    if any("::" in line for line in head):
        return _parse_delimited(lines, "::", u_i_r_t, 4)
    if not any("," in line for line in head):
        return _parse_delimited(lines, None, u_i_r_t, 4)
    header = [h.strip() for h in head[0].split(",")]
    if header[0].lstrip("-").isdigit():
        return _parse_delimited(lines, ",", u_i_r_t, 4)
    names = {"user": "userId", "item": "movieId", "rating": "rating", "timestamp": "timestamp"}
    missing = [n for k, n in names.items() if k != "rating" and n not in header]
    if missing:
        raise DataError(f"{path}:{lines['line'][0]}: the header has no column "
                        f"{', '.join(missing)} (expected userId,movieId,rating,timestamp)")
    columns = {k: header.index(n) for k, n in names.items() if n in header}
    rows = lines.slice(1)
    if not len(rows):
        raise DataError(f"{path}: no data rows after the header")
    return _parse_delimited(rows, ",", columns, len(header))


def _parse_sequences(lines: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parses S3-Rec `user item item ...` lines; a line is valid or bad as a whole.

    Returns:
        (one row per item: `user`, `item`; bad lines: `line`, `reason`), in file order.
    """
    not_id = pl.element().is_null() | (pl.element() < 0)
    parsed = lines.with_columns(pl.col("text").str.extract_all(r"\S+").alias("fields"))
    parsed = parsed.with_columns(
        pl.col("fields").list.len().alias("num_fields"),
        _int_field(pl.col("fields"), 0).alias("user"),
        pl.col("fields").list.slice(1).alias("raw_items"),
    ).with_columns(
        pl.col("raw_items").list.eval(pl.element().cast(pl.Int64, strict=False)).alias("item"),
    ).with_columns(
        pl.col("item").list.eval(not_id).alias("item_bad"),
    )
    checks = [
        (pl.col("num_fields") < 2,
         pl.format("expected a user id and at least one item id, found {} fields",
                   pl.col("num_fields"))),
        (pl.col("user").is_null() | (pl.col("user") < 0),
         pl.format("user id '{}' is not a non-negative integer", _raw_field(0))),
        (pl.col("item_bad").list.any(),
         pl.format("item id '{}' is not a non-negative integer",
                   pl.col("raw_items").list.get(pl.col("item_bad").list.arg_max()))),
    ]
    good, bad = _split_by_checks(parsed, checks)
    return good.select("user", "item").explode("item"), bad
