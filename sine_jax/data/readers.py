"""Readers of interaction logs: one streaming parse of the file into a validated event table.

Formats (`data.format`):
  movielens: GroupLens ratings, detected from the content: `ratings.dat` (`u::i::r::t`),
    `u.data` (`u i r t`, tab or space separated) or `ratings.csv` (comma separated, with a
    header naming `userId`, `movieId`, `timestamp`, or the four columns in that order without
    one). Every rating is an implicit interaction.
  interactions: the SASRec text format, one `user item` pair per line, file order = time order.
  sequences: the S3-Rec text format, `user item item ...` per line, in time order.
  amazon: the ratings-only CSV (`user,item,rating,timestamp`, no header); ids are strings
    (reviewer ids, ASINs such as `0000013714`).
  taobao: `UserBehavior.csv` (`user,item,category,behavior,timestamp`, no header); only `pv`
    (click) events are kept, as in the paper; the others are counted ("events_not_pv").
  csv: a generic CSV with a header, or a Parquet file (detected from its magic bytes), whose
    columns are named by `CsvColumns` (`data.user_column`, ...). Ids are integers when every
    id of a column is a canonical non-negative integer (`0`, `17`; not `017`), else strings;
    Parquet integer or string columns keep their type. Without a time column, file order is
    time order. CSV fields may be wrapped in double quotes but may not contain the separator.
Formats without timestamps get the row order 0..N-1 as time.

Parsing is vectorised and streaming (polars): the text is read line by line, split, checked,
and sunk to a Parquet file of events in a work directory, so memory does not grow with the
file. A bad row (wrong field count, an id that is not a non-negative integer or is empty, a
timestamp that is not an integer, a rating that is not a number, an unknown behaviour) is a
`DataError` naming `path:line` (1-based; for Parquet, the 1-based row), or with
`on_bad_row="skip"` is dropped and counted. Blank lines and a UTF-8 byte-order mark are
ignored; bytes that are not UTF-8 are replaced (they make an id or timestamp bad).
"""

import dataclasses
import os
import stat
import tempfile
from collections.abc import Callable

import numpy as np
import polars as pl
from absl import logging

from sine_jax.errors import ConfigError, DataError, printable

FORMATS = ("movielens", "interactions", "sequences", "amazon", "taobao", "csv")
ON_BAD_ROW = ("error", "skip")
TAOBAO_BEHAVIORS = ("pv", "buy", "cart", "fav")
_MAX_REPORTED_LINES = 10
_DETECT_LINES = 10  # movielens: the variant is detected from this many first lines
_NO_SEPARATOR = "\x1f"  # reads whole lines as one field (a line is cut at a unit separator)
_CANONICAL_INT = r"^(0|[1-9][0-9]{0,17})$"  # fits int64
_PARQUET_MAGIC = b"PAR1"
_EVENTS_FILE = "events.parquet"


@dataclasses.dataclass(frozen=True)
class CsvColumns:
    """Column names of the `csv` format (`data.user_column`, ...); "" = no such column."""

    user: str = "user_id"
    item: str = "item_id"
    time: str = "timestamp"
    category: str = ""
    separator: str = ","


@dataclasses.dataclass(frozen=True, eq=False)
class EventLog:
    """A parsed log: valid events on disk, read lazily.

    Attributes:
        events: columns user, item (Int64 or String raw ids), timestamp (Int64), line (UInt32,
            the 1-based source line; a tie-breaker that follows file order) and, when the log
            has one, category (Int64 or String; null = unknown).
        path: where it was read from.
        num_bad_rows: rows dropped by `on_bad_row="skip"`.
        bad_row_lines: the first <= 10 bad line numbers (1-based).
        dropped: valid events left out by the format's rule, {reason: count}.
    """

    events: pl.LazyFrame
    path: str
    num_bad_rows: int = 0
    bad_row_lines: tuple[int, ...] = ()
    dropped: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, eq=False)
class Interactions:
    """A flat interaction log in memory, in file order.

    Attributes:
        users: [N] raw user ids: int64, or str for string ids.
        items: [N] raw item ids: int64, or str.
        timestamps: [N] int64; formats without time use the row order 0..N-1.
        path: where it was read from.
        num_bad_rows: rows dropped by `on_bad_row="skip"`.
        bad_row_lines: the first <= 10 bad line numbers (1-based).
        categories: [N] object, the category of each event (int or str; None = unknown), or
            None when the log has no category column.
        dropped: valid events left out by the format's rule, {reason: count}.
    """

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    path: str
    num_bad_rows: int = 0
    bad_row_lines: tuple[int, ...] = ()
    categories: np.ndarray | None = None
    dropped: dict = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.users)

    def to_log(self) -> EventLog:
        """The same events as an `EventLog` (line = row number + 1)."""
        columns = {"user": self.users, "item": self.items,
                   "timestamp": np.asarray(self.timestamps, np.int64),
                   "line": np.arange(1, len(self.users) + 1, dtype=np.uint32)}
        if self.categories is not None:
            columns["category"] = self.categories
        return EventLog(pl.DataFrame(columns).lazy(), self.path, self.num_bad_rows,
                        self.bad_row_lines, dict(self.dropped))


def check_format(fmt: str, on_bad_row: str) -> None:
    """Raises ConfigError for an unknown format or `on_bad_row` mode."""
    if fmt not in FORMATS:
        raise ConfigError(f"data.format={fmt!r} has no reader; allowed: {', '.join(FORMATS)}")
    if on_bad_row not in ON_BAD_ROW:
        raise ConfigError(
            f"data.on_bad_row={on_bad_row!r} is not allowed; allowed: {', '.join(ON_BAD_ROW)}")


def parse_log(path: str, fmt: str, work_dir: str, *, on_bad_row: str = "error",
              columns: CsvColumns | None = None) -> EventLog:
    """Parses a log in one streaming pass into `work_dir`, which must outlive the result.

    Args:
        path: the file.
        fmt: one of `FORMATS`.
        work_dir: a directory for the parsed events (a Parquet file about the size of the
            input's numeric columns).
        on_bad_row: "error" (raise on the first bad row) or "skip" (drop and count bad rows).
        columns: the `csv` format's column names (default `CsvColumns()`).

    Returns:
        The valid events, in file order.

    Raises:
        ConfigError: unknown `fmt` or `on_bad_row`, or a bad `columns` value.
        DataError: missing, unreadable or empty file; a bad row when `on_bad_row="error"`;
            no valid row at all.
    """
    check_format(fmt, on_bad_row)
    path = os.fspath(path)
    _check_file(path)
    source = _source(path, fmt, columns or CsvColumns())
    keep = (pl.col("behavior") == "pv") if "behavior" in source.columns else pl.lit(True)
    parsed = source.rows.select(*source.columns, _failing(source.checks).alias("_bad"),
                                keep.alias("_keep")).drop("behavior", strict=False)
    events_path = os.path.join(work_dir, _EVENTS_FILE)
    try:
        parsed.sink_parquet(events_path, compression="lz4", engine="streaming")
    except (pl.exceptions.PolarsError, OSError) as e:  # unreadable input, full scratch disk
        raise DataError(f"{path}: parsing into {work_dir} failed: "
                        f"{str(e).splitlines()[0]}") from e
    table = pl.scan_parquet(events_path)
    counts = table.select(pl.len().alias("rows"), pl.col("_bad").sum().alias("bad"),
                          (~pl.col("_bad") & ~pl.col("_keep")).sum().alias("left_out")
                          ).collect().row(0, named=True)
    if not counts["rows"]:
        raise DataError(f"{path}: file is empty")
    num_bad = counts["bad"]
    bad_lines = tuple(table.filter("_bad").select("line").head(_MAX_REPORTED_LINES)
                      .collect()["line"].to_list())
    if num_bad and on_bad_row == "error":
        raise DataError(f"{path}:{bad_lines[0]}: {source.reason(bad_lines[0])}")
    if num_bad == counts["rows"]:
        raise DataError(f"{path}: no valid rows ({num_bad} bad rows, first at lines {bad_lines})")
    if num_bad:
        logging.warning("%s: skipped %d bad rows (first at lines %s); first: line %d: %s",
                        path, num_bad, bad_lines, bad_lines[0], source.reason(bad_lines[0]))
    dropped = {}
    if fmt == "taobao":
        dropped["events_not_pv"] = counts["left_out"]
        if counts["left_out"] == counts["rows"] - num_bad:
            raise DataError(f"{path}: no pv (click) events among {counts['left_out']} valid rows")
    events = table.filter(~pl.col("_bad") & pl.col("_keep")).drop("_bad", "_keep")
    schema = events.collect_schema()
    if "timestamp" not in schema:
        events = events.with_row_index("timestamp").with_columns(pl.col("timestamp").cast(pl.Int64))
    if fmt == "csv":
        events = _integer_ids_where_possible(events)
    order = ["user", "item", "timestamp", "line"] + (["category"] if "category" in schema else [])
    return EventLog(events.select(order), path, num_bad, bad_lines, dropped)


def read_interactions(path: str, fmt: str, on_bad_row: str = "error",
                      columns: CsvColumns | None = None) -> Interactions:
    """Reads a whole log into memory (`parse_log`, then collect); for small files and tests."""
    with tempfile.TemporaryDirectory(prefix="sine-jax-parse-") as work_dir:
        log = parse_log(path, fmt, work_dir, on_bad_row=on_bad_row, columns=columns)
        frame = log.events.collect()
    return Interactions(
        users=frame["user"].to_numpy(),
        items=frame["item"].to_numpy(),
        timestamps=frame["timestamp"].to_numpy(),
        path=log.path,
        num_bad_rows=log.num_bad_rows,
        bad_row_lines=log.bad_row_lines,
        categories=(np.array(frame["category"].to_list(), dtype=object)
                    if "category" in frame.columns else None),
        dropped=log.dropped,
    )


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(os.stat(path).st_mode):  # reading a FIFO or a device would block
        raise DataError(f"{path}: not a regular file (a pipe, socket or device); give a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from e


# --- Sources: typed rows and their checks ------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class _Source:
    """Typed rows of a file and the checks that make a row bad.

    Attributes:
        rows: `line` and the typed `columns` (null where a value is bad), plus helpers.
        columns: the parsed columns to keep: line, user, item[, timestamp][, category]
            [, behavior].
        checks: (failure condition, message) pairs; a bad row gets the first failing message.
        reparse: line number -> the rows of that line only (messages are formatted for it).
    """

    rows: pl.LazyFrame
    columns: list
    checks: list
    reparse: Callable[[int], pl.LazyFrame]

    def reason(self, line: int) -> str:
        """The message of the first failing check of `line`."""
        failing = [cond.fill_null(False) for cond, _ in self.checks]
        reason = pl.when(failing[0]).then(self.checks[0][1])
        for cond, (_, message) in zip(failing[1:], self.checks[1:]):
            reason = reason.when(cond).then(message)
        rows = self.reparse(line).select(reason.alias("reason")).drop_nulls().collect()
        return printable(rows["reason"][0])  # the file's bytes, never terminal escapes


def _failing(checks: list) -> pl.Expr:
    return pl.any_horizontal([cond.fill_null(False) for cond, _ in checks])


@dataclasses.dataclass(frozen=True)
class _Layout:
    """A delimited text layout.

    Attributes:
        separator: the field separator; None = runs of whitespace.
        num_fields: the number of fields every row must have.
        fields: field index of "user", "item" and optionally "timestamp", "rating",
            "category", "behavior".
        string_ids: ids are non-empty strings (else non-negative integers).
        category_ids: categories are non-negative integers (else strings, "" = unknown).
        unquote: strip one pair of surrounding double quotes from each field.
    """

    separator: str | None
    num_fields: int
    fields: dict
    string_ids: bool = False
    category_ids: bool = False
    unquote: bool = False


_U_I_R_T = {"user": 0, "item": 1, "rating": 2, "timestamp": 3}
_LAYOUTS = {
    "interactions": _Layout(None, 2, {"user": 0, "item": 1}),
    "amazon": _Layout(",", 4, _U_I_R_T, string_ids=True),
    "taobao": _Layout(",", 5, {"user": 0, "item": 1, "category": 2, "behavior": 3,
                               "timestamp": 4}, category_ids=True),
}


def _source(path: str, fmt: str, columns: CsvColumns) -> _Source:
    if fmt == "csv" and _is_parquet(path):
        return _parquet_source(path, columns)

    def lines_upto(line: int) -> pl.LazyFrame:
        return _scan_lines(path, n_rows=line).filter(pl.col("line") == line)

    if fmt == "sequences":
        return _Source(_sequence_rows(_scan_lines(path)), ["line", "user", "item"],
                       _SEQUENCE_CHECKS, lambda n: _sequence_rows(lines_upto(n), explode=False))
    lines = _scan_lines(path)
    if fmt == "movielens":
        lines, layout = _movielens_layout(path, lines)
    elif fmt == "csv":
        lines, layout = _csv_layout(path, lines, columns)
    else:
        layout = _LAYOUTS[fmt]
    keys = [k for k in ("user", "item", "timestamp", "category", "behavior") if k in layout.fields]
    return _Source(_delimited_rows(lines, layout), ["line"] + keys, _delimited_checks(layout),
                   lambda n: _delimited_rows(lines_upto(n), layout))


def _scan_lines(path: str, n_rows: int | None = None) -> pl.LazyFrame:
    """The non-blank lines of a text file: `line` (UInt32, 1-based) and `text` (no line end)."""
    lines = pl.scan_csv(path, has_header=False, separator=_NO_SEPARATOR, quote_char=None,
                        schema={"text": pl.String}, encoding="utf8-lossy",
                        truncate_ragged_lines=True, raise_if_empty=False, n_rows=n_rows,
                        row_index_name="line", row_index_offset=1)
    return (lines.with_columns(pl.col("text").str.strip_chars_end("\r"))
            .filter(pl.col("text").str.strip_chars() != ""))


def _head(path: str, lines: pl.LazyFrame, n: int) -> pl.DataFrame:
    try:
        head = lines.head(n).collect()
    except pl.exceptions.PolarsError as e:
        raise DataError(f"{path}: cannot read: {str(e).splitlines()[0]}") from e
    if not len(head):
        raise DataError(f"{path}: file is empty")
    return head


def _movielens_layout(path: str, lines: pl.LazyFrame) -> tuple[pl.LazyFrame, _Layout]:
    """Detects ratings.dat / u.data / ratings.csv from the first lines."""
    head = _head(path, lines, _DETECT_LINES)
    texts = head["text"].to_list()
    if any("::" in t for t in texts):
        return lines, _Layout("::", 4, _U_I_R_T)
    if not any("," in t for t in texts):
        return lines, _Layout(None, 4, _U_I_R_T)
    if texts[0].split(",")[0].strip().lstrip("-").isdigit():
        return lines, _Layout(",", 4, _U_I_R_T)
    header = [h.strip() for h in texts[0].split(",")]
    names = {"user": "userId", "item": "movieId", "rating": "rating", "timestamp": "timestamp"}
    missing = [n for k, n in names.items() if k != "rating" and n not in header]
    if missing:
        raise DataError(f"{path}:{head['line'][0]}: the header has no column "
                        f"{', '.join(missing)} (expected userId,movieId,rating,timestamp)")
    _check_unique_columns(path, head["line"][0], header, names.values())
    if len(head) < 2:
        raise DataError(f"{path}: no data rows after the header")
    layout = _Layout(",", len(header), {k: header.index(n) for k, n in names.items()
                                        if n in header})
    return lines.filter(pl.col("line") > head["line"][0]), layout


def _csv_layout(path: str, lines: pl.LazyFrame, columns: CsvColumns
                ) -> tuple[pl.LazyFrame, _Layout]:
    """The header (first non-blank line) names the columns of `columns`."""
    named = _csv_column_fields(columns)
    head = _head(path, lines, 2)
    header = [h.strip().strip('"') for h in head["text"][0].split(columns.separator)]
    fields = {}
    for key, field, name in named:
        if name not in header:
            raise DataError(f"{path}:{head['line'][0]}: the header has no column {name!r} "
                            f"(data.{field}); found: {', '.join(header)}")
        fields[key] = header.index(name)
    _check_unique_columns(path, head["line"][0], header, [name for _, _, name in named])
    if len(head) < 2:
        raise DataError(f"{path}: no data rows after the header")
    layout = _Layout(columns.separator, len(header), fields, string_ids=True, unquote=True)
    return lines.filter(pl.col("line") > head["line"][0]), layout


def _check_unique_columns(path: str, line: int, header: list[str], used) -> None:
    """A column the reader uses must be named once: which one was meant is unknowable."""
    for name in used:
        if header.count(name) > 1:
            raise DataError(f"{path}:{line}: the header names column {name!r} "
                            f"{header.count(name)} times; rename or drop the repeats")


def _csv_column_fields(columns: CsvColumns) -> list[tuple[str, str, str]]:
    """(key, config field, column name) of each configured column; checks the names."""
    if (not isinstance(columns.separator, str) or len(columns.separator) != 1
            or columns.separator in "\"\r\n"):
        raise ConfigError(f"data.csv_separator={columns.separator!r} must be one character "
                          f"other than a quote or a line end")
    named = [("user", "user_column", columns.user), ("item", "item_column", columns.item),
             ("timestamp", "time_column", columns.time),
             ("category", "category_column", columns.category)]
    for key, field, name in named:
        if not isinstance(name, str) or (key in ("user", "item") and not name):
            raise ConfigError(f"data.{field}={name!r} must name a column")
    return [(k, f, n) for k, f, n in named if n]


# --- Delimited text ------------------------------------------------------------------------------


def _delimited_rows(lines: pl.LazyFrame, layout: _Layout) -> pl.LazyFrame:
    """Adds `fields` (list of str), `num_fields` and one typed column per layout field."""
    sep = layout.separator
    fields = (pl.col("text").str.extract_all(r"\S+") if sep is None
              else pl.col("text").str.split(sep))
    rows = lines.with_columns(fields.alias("fields")).with_columns(
        pl.col("fields").list.len().alias("num_fields"))
    typed = []
    for key, index in layout.fields.items():
        raw = _field(index, layout.unquote)
        if key in ("user", "item"):
            typed.append(_id_value(raw, layout.string_ids).alias(key))
        elif key == "timestamp":
            typed.append(raw.cast(pl.Int64, strict=False).alias(key))
        elif key == "category":
            typed.append(_id_value(raw, not layout.category_ids).alias(key))
        elif key == "behavior":
            typed.append(raw.alias(key))
    return rows.with_columns(typed)


def _field(index: int, unquote: bool = False) -> pl.Expr:
    raw = pl.col("fields").list.get(index, null_on_oob=True).str.strip_chars()
    if unquote:
        quoted = raw.str.starts_with('"') & raw.str.ends_with('"') & (raw.str.len_chars() > 1)
        raw = pl.when(quoted).then(raw.str.slice(1, raw.str.len_chars() - 2)).otherwise(raw)
    return raw


def _id_value(raw: pl.Expr, string_ids: bool) -> pl.Expr:
    """A raw id: the stripped string (null if empty), or the integer (null if not one or < 0)."""
    if string_ids:
        return pl.when(raw != "").then(raw)
    value = raw.cast(pl.Int64, strict=False)
    return pl.when(value >= 0).then(value)


def _describe(sep: str | None) -> str:
    return "separated by whitespace" if sep is None else f"separated by {sep!r}"


def _delimited_checks(layout: _Layout) -> list[tuple[pl.Expr, pl.Expr]]:
    """(failure condition, message) pairs for the rows of `_delimited_rows`."""
    fields, unquote = layout.fields, layout.unquote
    what = "a non-empty string" if layout.string_ids else "a non-negative integer"
    checks = [(pl.col("num_fields") != layout.num_fields,
               pl.format(f"expected {layout.num_fields} fields {_describe(layout.separator)}, "
                         f"found {{}}", pl.col("num_fields")))]
    for key in ("user", "item"):
        checks.append((pl.col(key).is_null(),
                       pl.format(f"{key} id '{{}}' is not {what}", _field(fields[key], unquote))))
    if "timestamp" in fields:
        checks.append((pl.col("timestamp").is_null(),
                       pl.format("timestamp '{}' is not an integer",
                                 _field(fields["timestamp"], unquote))))
    if "rating" in fields:
        rating = _field(fields["rating"]).cast(pl.Float64, strict=False)
        checks.append((~rating.is_finite().fill_null(False),
                       pl.format("rating '{}' is not a number", _field(fields["rating"]))))
    if "category" in fields and layout.category_ids:
        checks.append((pl.col("category").is_null(),
                       pl.format("category id '{}' is not a non-negative integer",
                                 _field(fields["category"]))))
    if "behavior" in fields:
        checks.append((~pl.col("behavior").is_in(TAOBAO_BEHAVIORS).fill_null(False),
                       pl.format(f"behavior '{{}}' is not one of {', '.join(TAOBAO_BEHAVIORS)}",
                                 pl.col("behavior"))))
    return checks


# --- Sequences (S3-Rec): a line is valid or bad as a whole --------------------------------------


def _sequence_rows(lines: pl.LazyFrame, explode: bool = True) -> pl.LazyFrame:
    """`user`, `item` (a list of ints per line, or one row per item with `explode`)."""
    not_id = pl.element().is_null() | (pl.element() < 0)
    rows = lines.with_columns(pl.col("text").str.extract_all(r"\S+").alias("fields")).with_columns(
        pl.col("fields").list.len().alias("num_fields"),
        _id_value(_field(0), False).alias("user"),
        pl.col("fields").list.slice(1).alias("raw_items"),
    ).with_columns(
        pl.col("raw_items").list.eval(pl.element().cast(pl.Int64, strict=False)).alias("item"),
    ).with_columns(
        pl.col("item").list.eval(not_id).alias("item_bad"),
    )
    if not explode:
        return rows
    # A bad line stays one row: its item list becomes null before the explode.
    rows = rows.with_columns(pl.when(~_failing(_SEQUENCE_CHECKS)).then(pl.col("item"))
                             .alias("item"))
    return rows.explode("item")


_SEQUENCE_CHECKS = [
    (pl.col("num_fields") < 2,
     pl.format("expected a user id and at least one item id, found {} fields",
               pl.col("num_fields"))),
    (pl.col("user").is_null(),
     pl.format("user id '{}' is not a non-negative integer", _field(0))),
    (pl.col("item_bad").list.any(),
     pl.format("item id '{}' is not a non-negative integer",
               pl.col("raw_items").list.get(pl.col("item_bad").list.arg_max()))),
]


# --- Parquet (csv format) ------------------------------------------------------------------------


def _is_parquet(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == _PARQUET_MAGIC


def _parquet_source(path: str, columns: CsvColumns) -> _Source:
    """Typed columns checked per row; `line` is the 1-based row number."""
    named = _csv_column_fields(columns)
    try:
        schema = pl.scan_parquet(path).collect_schema()
    except pl.exceptions.PolarsError as e:
        raise DataError(f"{path}: cannot read as Parquet: {str(e).splitlines()[0]}") from e
    typed, checks = [], []
    for key, field, name in named:
        if name not in schema:
            raise DataError(f"{path}: no column {name!r} (data.{field}); found: "
                            f"{', '.join(schema.names())}")
        raw = pl.col(f"_raw_{key}")
        value, what = _parquet_value(raw, schema[name], key)
        if value is None:
            raise DataError(f"{path}: column {name!r} (data.{field}) has type {schema[name]}; "
                            f"expected {what}")
        typed.append(value.alias(key))
        if key != "category":
            label = "timestamp" if key == "timestamp" else f"{key} id"
            checks.append((pl.col(key).is_null(), pl.format(
                f"{label} '{{}}' is not {what}", raw.cast(pl.String).fill_null("null"))))

    def rows(table: pl.LazyFrame) -> pl.LazyFrame:
        raw = [pl.col(name).alias(f"_raw_{key}") for key, _, name in named]
        return table.select("line", *raw).with_columns(typed)

    table = pl.scan_parquet(path).with_row_index("line", offset=1)
    return _Source(rows(table), ["line"] + [k for k, _, _ in named], checks,
                   lambda n: rows(table.filter(pl.col("line") == n)))


def _parquet_value(col: pl.Expr, dtype, key: str) -> tuple[pl.Expr | None, str]:
    """(typed value expression or None if the column type is unusable, what it must be)."""
    if key in ("user", "item", "category"):
        if dtype.is_integer():
            return pl.when(col >= 0).then(col.cast(pl.Int64)), "a non-negative integer"
        if dtype == pl.String:
            value = col.str.strip_chars()
            return pl.when(value != "").then(value), "a non-empty string"
        return None, "integers or strings"
    if dtype.is_integer():
        return col.cast(pl.Int64), "an integer"
    if dtype == pl.Date or isinstance(dtype, pl.Datetime):
        return col.dt.epoch("s"), "a date or time"
    if dtype == pl.String:
        return col.str.strip_chars().cast(pl.Int64, strict=False), "an integer"
    return None, "integers, dates or times"


def _integer_ids_where_possible(events: pl.LazyFrame) -> pl.LazyFrame:
    """Casts string id columns whose every value is a canonical non-negative integer."""
    schema = events.collect_schema()
    string_columns = [c for c in ("user", "item") if schema[c] == pl.String]
    if not string_columns:
        return events
    canonical = events.select(pl.col(c).str.contains(_CANONICAL_INT).all()
                              for c in string_columns).collect().row(0)
    casts = [pl.col(c).cast(pl.Int64) for c, ok in zip(string_columns, canonical) if ok]
    return events.with_columns(casts) if casts else events
