"""Preprocessing: interaction log -> filtered, remapped, split CSR sequences, cached.

Rules, in this order:
  1. Raw ids (integers, or strings such as Amazon's) get dense codes in ascending raw-id order.
  2. Filters (`filters.min_count_filter`): items with fewer than `data.min_item_interactions`
     events are dropped, then users with fewer than `data.min_user_interactions` (at least 3
     for leave-one-out, 2 for held-out users) of the rest; once, or until stable with
     `data.kcore_iterative`. A filter that leaves nothing is a `DataError` naming it.
  3. Each user's events are sorted by timestamp, stably (ties keep file order); users by raw
     id.
  4. Split (`data.split`):
     leave_one_out: the last item of every user is the test target, the one before it the
       validation target, the rest the training sequence.
     held_out_users: users are shuffled (seed `data.split_seed`) and split 8:1:1 into
       training, validation and test users; training users' whole sequences are training
       data; a held-out user's first floor(0.8 len) items are the input, the rest the targets
       (ComiRec's protocol).
  5. Items get ids 1..M by descending count in the training data, ties by ascending raw id;
     items seen only in evaluation come last, by raw id. 0 is padding.
Repeated (user, item) pairs are kept as separate events and counted ("duplicate_interactions").
Item categories come from the log's category column (Taobao, or `data.category_column`: an
item's category is that of its first event), else from a metadata companion file (movies.dat,
u.item, movies.csv) beside the log.

Large logs stream: the reader sinks the parsed events to a scratch Parquet file, polars
builds the id tables and codes, and only int32/int64 code arrays are held in memory (the
peak, about 50 bytes per event, is the collected join: 4.4 GiB for 89.5M Taobao clicks,
docs/robustness.md). The result is cached (`cache.Cache`) in
`cache_dir`, keyed by the data config and fingerprints of the log and its companion files.
"""

import dataclasses
import inspect
import os
import tempfile

import numpy as np
import polars as pl
from absl import logging

from sine_jax.data import cache as cache_lib
from sine_jax.data import filters, readers, synthetic
from sine_jax.data import metadata as metadata_lib
from sine_jax.errors import ConfigError, DataError

FORMATS = ("synthetic",) + readers.FORMATS
SPLITS = ("leave_one_out", "held_out_users")
MIN_INTERACTIONS = {"leave_one_out": 3, "held_out_users": 2}  # per user, whatever the config
TRAIN, VALID, TEST = 0, 1, 2  # held_out_users: `SequenceData.user_split` values
INPUT_FRACTION = 0.8  # held_out_users: the input share of a held-out user's sequence
CACHE_VERSION = 2  # bump when the preprocessing or the cache layout changes
_NOT_IN_KEY = ("cache_dir",)  # data config fields that do not change the data
_ARRAYS = ("offsets", "items", "item_raw_ids", "user_raw_ids", "item_counts")
_OPTIONAL_ARRAYS = ("item_categories", "user_split")


@dataclasses.dataclass(frozen=True, eq=False)
class SequenceData:
    """Every user's full sequence in time order, as CSR arrays, with remapped item ids.

    Attributes:
        offsets: [U+1] int64 offsets into `items`; user u owns items[offsets[u]:offsets[u+1]].
        items: [N] int32 remapped ids 1..M.
        num_items: M (ids 1..M; 0 = padding).
        item_raw_ids: [M+1] raw id of each remapped id: int64 with [0] = -1, or str (string
            ids, e.g. Amazon ASINs) with [0] = "".
        user_raw_ids: [U] int64 or str, ascending.
        item_counts: [M+1] int64 count in the training data (0 for padding), non-increasing.
        item_categories: [M+1] int32 index into `category_names` of the item's category (the
            first genre for MovieLens); -1 for padding and unknown. None without categories.
        category_names: the genre / category names; () without categories.
        item_titles: [M+1] titles, "" for padding and unknown. None without metadata.
        summary: users, items, interactions, dropped ({reason: count}), bad_rows, and more (see
            `preprocess`); JSON-serialisable.
        split: "leave_one_out" or "held_out_users".
        user_split: held_out_users: [U] int8, TRAIN, VALID or TEST; None for leave-one-out.
    """

    offsets: np.ndarray
    items: np.ndarray
    num_items: int
    item_raw_ids: np.ndarray
    user_raw_ids: np.ndarray
    item_counts: np.ndarray
    item_categories: np.ndarray | None
    category_names: tuple[str, ...]
    item_titles: tuple[str, ...] | None
    summary: dict
    split: str = "leave_one_out"
    user_split: np.ndarray | None = None

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    def train_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """([U] int64 starts, [U] int64 ends): user u's training items are items[start:end].

        Leave-one-out: all but the last two items. Held-out users: a training user's whole
        sequence; nothing (start = end) for validation and test users.
        """
        starts, ends = self.offsets[:-1], self.offsets[1:]
        if self.split == "leave_one_out":
            return starts, ends - 2
        return starts, np.where(self.user_split == TRAIN, ends, starts)

    def train_sequence(self, u: int) -> np.ndarray:
        """[len] int32: user u's training items, oldest first."""
        starts, ends = self.train_bounds()
        return self.items[starts[u]:ends[u]]

    def valid_target(self, u: int) -> int:
        """Leave-one-out: user u's validation target."""
        self._require_leave_one_out()
        return int(self.items[self.offsets[u + 1] - 2])

    def test_target(self, u: int) -> int:
        """Leave-one-out: user u's test target."""
        self._require_leave_one_out()
        return int(self.items[self.offsets[u + 1] - 1])

    def _require_leave_one_out(self):
        if self.split != "leave_one_out":
            raise ValueError(f"single targets exist for leave_one_out only, not {self.split}")


@dataclasses.dataclass(frozen=True)
class _Options:
    """The validated preprocessing fields of `config.data`."""

    fmt: str
    path: str
    on_bad_row: str
    min_user: int
    min_item: int
    kcore_iterative: bool
    split: str
    split_seed: int
    columns: readers.CsvColumns


def load_dataset(data_config, cache_dir: str | None) -> SequenceData:
    """Reads, preprocesses and caches the dataset that `config.data` describes.

    Args:
        data_config: `config.data` (ConfigDict or dict): format, path, on_bad_row,
            min_user_interactions, min_item_interactions, kcore_iterative, split, split_seed,
            user_column, item_column, time_column, category_column, csv_separator, synthetic
            (num_users, num_items, num_categories, seed, and any other `synthetic.generate`
            argument). Missing fields take their defaults.
        cache_dir: where to cache the result (also the scratch space of large logs); None or
            "" = no cache.

    Returns:
        The dataset.

    Raises:
        ConfigError: an unknown format or a bad field value.
        DataError: unreadable or bad input data, or a filter that leaves nothing.
    """
    config = _as_dict(data_config)
    options = _options(config)
    if not cache_dir:
        with tempfile.TemporaryDirectory(prefix="sine-jax-") as scratch:
            data = _build(config, options, scratch)
    else:
        cache = cache_lib.Cache(cache_dir, "dataset", _key_material(config))
        data = _from_cache(cache)
        if data is None:
            with cache.building() as (scratch, writable):
                data = _from_cache(cache)  # built by a concurrent job while this one waited
                if data is None:
                    data = _build(config, options, scratch)
                    if writable:
                        cache.save(*_cache_entry(data))
        else:
            logging.info("Dataset from cache %s", cache.npz_path)
    logging.info("%s", format_summary(data))
    return data


def _build(config: dict, options: _Options, scratch: str) -> SequenceData:
    if options.fmt == "synthetic":
        interactions, metadata = synthetic.generate(**_synthetic_kwargs(config))
        log = interactions.to_log()
    else:
        log = readers.parse_log(options.path, options.fmt, scratch,
                                on_bad_row=options.on_bad_row, columns=options.columns)
        metadata = None
        if "category" not in log.events.collect_schema():
            metadata = metadata_lib.read_item_metadata(options.path)
    return preprocess(log, metadata, min_user_interactions=options.min_user,
                      min_item_interactions=options.min_item,
                      kcore_iterative=options.kcore_iterative, split=options.split,
                      split_seed=options.split_seed)


def preprocess(log: readers.EventLog | readers.Interactions,
               metadata: metadata_lib.ItemMetadata | None = None, *,
               min_user_interactions: int = 3, min_item_interactions: int = 1,
               kcore_iterative: bool = False, split: str = "leave_one_out",
               split_seed: int = 0) -> SequenceData:
    """Filters, sorts, splits and remaps a log (the module docstring's rules).

    Args:
        log: the parsed log (or an in-memory one).
        metadata: titles and genres by raw item id, or None; ignored when the log has
            categories.
        min_user_interactions: users with fewer events are dropped (at least
            MIN_INTERACTIONS[split] always).
        min_item_interactions: items with fewer events are dropped.
        kcore_iterative: repeat both filters until stable.
        split: one of SPLITS (`check_split`).
        split_seed: held_out_users: the seed of the user shuffle.

    Returns:
        The dataset. Its summary holds: source, split, users, items, interactions, dropped
        ({reason: count}), filter_passes, bad_rows, bad_row_lines, duplicate_interactions,
        sequence_length (min, median, mean, max), categories, items_without_category,
        items_with_several_categories, and for held_out_users users_per_split.

    Raises:
        DataError: a filter left nothing, or too few users for the split.
    """
    if isinstance(log, readers.Interactions):
        log = log.to_log()
    codes, (users, items, timestamps) = _encode(log.events)
    min_user = max(min_user_interactions, MIN_INTERACTIONS[split])
    kept = filters.min_count_filter(users, items, len(codes.user_ids),
                                    len(codes.item_ids), min_user=min_user,
                                    min_item=min_item_interactions, iterative=kcore_iterative)
    if kept.emptied_by == "item":
        raise DataError(f"{log.path}: the item filter left nothing: no item has at least "
                        f"{min_item_interactions} interactions (data.min_item_interactions)")
    if kept.emptied_by == "user":
        raise DataError(f"{log.path}: the user filter left nothing: no user has at least "
                        f"{min_user} interactions after the item filter "
                        f"(data.min_user_interactions={min_user_interactions}; "
                        f"{split} needs {MIN_INTERACTIONS[split]})")

    # Order: users by raw id, then each user's events by timestamp, ties in file order.
    users, items, timestamps = users[kept.keep], items[kept.keep], timestamps[kept.keep]
    user_present = np.bincount(users, minlength=len(codes.user_ids)) > 0
    users = (np.cumsum(user_present) - 1).astype(np.int32)[users]
    lengths = np.bincount(users)
    items = items[_time_order(users, timestamps)]
    del users, timestamps
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    user_split = None
    if split == "leave_one_out":
        is_train = np.arange(len(items)) < np.repeat(offsets[1:] - 2, lengths)
    else:
        user_split = _assign_users(len(lengths), split_seed, log.path)
        is_train = np.repeat(user_split == TRAIN, lengths)

    num_codes = len(codes.item_ids)
    train_counts = np.bincount(items[is_train], minlength=num_codes)
    present = np.flatnonzero(np.bincount(items, minlength=num_codes))
    by_popularity = present[np.argsort(-train_counts[present], kind="stable")]
    new_id = np.zeros(num_codes, np.int32)
    new_id[by_popularity] = np.arange(1, len(by_popularity) + 1, dtype=np.int32)
    items = new_id[items]
    pad = "" if codes.item_ids.dtype.kind == "U" else -1
    item_raw_ids = np.concatenate([np.array([pad], codes.item_ids.dtype),
                                   codes.item_ids[by_popularity]])

    if codes.item_category is not None:
        categories, names = _categories(codes.item_category[by_popularity], codes.category_names)
        titles = None
    else:
        categories, names, titles = _attach_metadata(item_raw_ids, metadata)
    summary = {
        "source": log.path,
        "split": split,
        "users": len(lengths),
        "items": len(by_popularity),
        "interactions": len(items),
        "dropped": {**log.dropped, **kept.dropped},
        "filter_passes": kept.passes,
        "bad_rows": log.num_bad_rows,
        "bad_row_lines": list(log.bad_row_lines),
        "duplicate_interactions": _count_duplicates(offsets, items, len(by_popularity)),
        "sequence_length": {"min": int(lengths.min()), "median": float(np.median(lengths)),
                            "mean": float(lengths.mean()), "max": int(lengths.max())},
        "categories": len(names),
        "items_without_category": None if categories is None else int(np.sum(categories[1:] < 0)),
        "items_with_several_categories": codes.items_with_several_categories,
    }
    if user_split is not None:
        summary["users_per_split"] = dict(zip(("train", "valid", "test"),
                                              np.bincount(user_split, minlength=3).tolist()))
    return SequenceData(
        offsets=offsets,
        items=items,
        num_items=len(by_popularity),
        item_raw_ids=item_raw_ids,
        user_raw_ids=codes.user_ids[user_present],
        item_counts=np.concatenate([[0], train_counts[by_popularity]]).astype(np.int64),
        item_categories=categories,
        category_names=names,
        item_titles=titles,
        summary=summary,
        split=split,
        user_split=user_split,
    )


@dataclasses.dataclass(frozen=True, eq=False)
class _Codes:
    """The id tables of a log: raw ids in ascending order get codes 0, 1, ...

    Attributes:
        user_ids: [U] raw user ids, ascending (int64 or str).
        item_ids: [M] raw item ids, ascending.
        item_category: [M] int32 index into `category_names` (-1 = unknown), or None.
        category_names: the log's category names, ascending by raw category.
        items_with_several_categories: items whose events name different categories.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    item_category: np.ndarray | None
    category_names: tuple[str, ...]
    items_with_several_categories: int | None


def _encode(events: pl.LazyFrame) -> tuple[_Codes, tuple[np.ndarray, ...]]:
    """The id tables of `events` and the coded events (streaming joins against the tables).

    Returns:
        (the tables, ([N] int32 user codes, [N] int32 item codes, [N] int64 timestamps)), the
        events in file order (checked with `line`), so that a stable sort by time breaks ties
        in file order.
    """
    has_category = "category" in events.collect_schema()
    user_table = events.select(pl.col("user").unique()).sort("user").with_row_index("u")
    per_item = [pl.col("category").first(),
                pl.col("category").drop_nulls().n_unique().alias("num_categories")
                ] if has_category else []
    item_table = (events.group_by("item").agg(*per_item) if has_category
                  else events.select(pl.col("item").unique()))
    item_table = item_table.sort("item").with_row_index("i")
    user_table, item_table = pl.collect_all([user_table, item_table], engine="streaming")
    coded = (events
             .join(user_table.lazy(), on="user", maintain_order="left")
             .join(item_table.lazy().select("item", "i"), on="item", maintain_order="left")
             .select(pl.col("u").cast(pl.Int32), pl.col("i").cast(pl.Int32), "timestamp", "line")
             .collect(engine="streaming"))
    if coded.select((pl.col("line").diff() < 0).any()).item():  # not expected (left order)
        coded = coded.sort("line")
    item_category, names, several = None, (), None
    if has_category:
        category = item_table["category"]
        names = tuple(str(c) for c in category.drop_nulls().unique().sort())
        item_category = (category.rank("dense") - 1).fill_null(-1).to_numpy().astype(np.int32)
        several = int((item_table["num_categories"] > 1).sum())
    codes = _Codes(user_ids=_raw_ids(user_table["user"]), item_ids=_raw_ids(item_table["item"]),
                   item_category=item_category, category_names=names,
                   items_with_several_categories=several)
    arrays = []
    for name in ("u", "i", "timestamp"):  # one column at a time: to_numpy copies chunked data
        arrays.append(coded.get_column(name).to_numpy())
        coded = coded.drop(name)
    return codes, tuple(arrays)


def _time_order(users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """[N] int64 stable order by (user, timestamp): ties keep their current (file) order."""
    low, high = int(timestamps.min()), int(timestamps.max())
    if high - low < 2**32 and users.max(initial=0) < 2**31:
        key = (users.astype(np.int64) << 32) | (timestamps - low)  # one key: ~6x faster
        return np.argsort(key, kind="stable")
    return np.lexsort((timestamps, users))


def _raw_ids(ids: pl.Series) -> np.ndarray:
    """int64, or a numpy str array for string ids."""
    if ids.dtype == pl.String:
        return np.array(ids.to_list(), dtype=str)
    return ids.to_numpy().astype(np.int64)


def _categories(item_category: np.ndarray, names: tuple[str, ...]
                ) -> tuple[np.ndarray, tuple[str, ...]]:
    """([M+1] int32 category of each remapped item, names of the categories kept items use)."""
    used = np.unique(item_category[item_category >= 0])
    index = np.full(len(names) + 1, -1, np.int32)  # the last entry maps -1 (unknown) to -1
    index[used] = np.arange(len(used), dtype=np.int32)
    return (np.concatenate([[-1], index[item_category]]).astype(np.int32),
            tuple(names[c] for c in used))


def _assign_users(num_users: int, seed: int, source: str) -> np.ndarray:
    """[U] int8 TRAIN / VALID / TEST: a seeded shuffle split 8:1:1 (first 80% train)."""
    n_train, n_valid = (8 * num_users) // 10, (9 * num_users) // 10
    if n_valid == n_train or n_valid == num_users:
        raise DataError(f"{source}: held_out_users leaves no validation or test user among "
                        f"{num_users} users (split 8:1:1 after filtering)")
    permutation = np.random.default_rng(seed).permutation(num_users)
    groups = np.empty(num_users, np.int8)
    groups[permutation[:n_train]] = TRAIN
    groups[permutation[n_train:n_valid]] = VALID
    groups[permutation[n_valid:]] = TEST
    return groups


def _count_duplicates(offsets: np.ndarray, items: np.ndarray, num_items: int) -> int:
    """Number of events that repeat an earlier (user, item) pair."""
    user_index = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    pairs = np.sort(user_index * (num_items + 1) + items)
    return int(np.count_nonzero(pairs[1:] == pairs[:-1]))


def format_summary(data: SequenceData) -> str:
    """A few lines describing the dataset, for the log."""
    s = data.summary
    lengths = s["sequence_length"]
    lines = [
        (f"Dataset {s['source']}: {s['users']:,} users, {s['items']:,} items, "
         f"{s['interactions']:,} interactions; split {s['split']}"
         + (f" (users: {s['users_per_split']})" if "users_per_split" in s else "")),
        (f"  sequence length min/median/mean/max: {lengths['min']} / {lengths['median']:g} / "
         f"{lengths['mean']:.1f} / {lengths['max']}"),
        (f"  dropped ({s['filter_passes']} filter pass(es)): "
         + ", ".join(f"{k}={v:,}" for k, v in s["dropped"].items())),
        f"  bad rows skipped: {s['bad_rows']:,}"
        + (f" (first at lines {s['bad_row_lines']})" if s["bad_rows"] else ""),
        f"  duplicate (user, item) events kept: {s['duplicate_interactions']:,}",
    ]
    if data.item_categories is None:
        lines.append("  no item categories")
    else:
        several = s.get("items_with_several_categories")
        lines.append(f"  {s['categories']:,} categories; items without one: "
                     f"{s['items_without_category']:,}"
                     + ("" if several is None else f"; with several (first kept): {several:,}"))
    return "\n".join(lines)


# --- Config ------------------------------------------------------------------------------------


def check_split(split) -> None:
    """Raises ConfigError unless `data.split` is one of SPLITS (the one check of that field)."""
    if split not in SPLITS:
        raise ConfigError(f"data.split={split!r} is not allowed; allowed: {', '.join(SPLITS)}")


def _as_dict(config) -> dict:
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def _options(config: dict) -> _Options:
    """Validates the preprocessing fields of `config.data` (ConfigError names the field)."""
    fmt = config.get("format")
    if fmt not in FORMATS:
        raise ConfigError(f"data.format={fmt!r} is not allowed; allowed: {', '.join(FORMATS)}")
    on_bad_row = config.get("on_bad_row", "error")
    readers.check_format(fmt if fmt != "synthetic" else readers.FORMATS[0], on_bad_row)
    if fmt != "synthetic" and not config.get("path"):
        raise ConfigError(f"data.path is empty: name the interactions file for "
                          f"data.format={fmt!r}")
    split = config.get("split", "leave_one_out")
    check_split(split)
    kcore = config.get("kcore_iterative", False)
    if not isinstance(kcore, bool):
        raise ConfigError(f"data.kcore_iterative={kcore!r} must be True or False")
    defaults = readers.CsvColumns()
    columns = readers.CsvColumns(
        user=config.get("user_column", defaults.user),
        item=config.get("item_column", defaults.item),
        time=config.get("time_column", defaults.time),
        category=config.get("category_column", defaults.category),
        separator=config.get("csv_separator", defaults.separator))
    return _Options(fmt=fmt, path=config.get("path", ""), on_bad_row=on_bad_row,
                    min_user=_non_negative_int(config, "min_user_interactions", 3),
                    min_item=_non_negative_int(config, "min_item_interactions", 1),
                    kcore_iterative=kcore, split=split,
                    split_seed=_non_negative_int(config, "split_seed", 0), columns=columns)


def _non_negative_int(config: dict, name: str, default: int) -> int:
    value = config.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigError(f"data.{name}={value!r} is not allowed; it must be an integer >= 0")
    return int(value)


def _synthetic_kwargs(config: dict) -> dict:
    kwargs = dict(config.get("synthetic") or {})
    allowed = list(inspect.signature(synthetic.generate).parameters)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(f"data.synthetic.{unknown[0]} is not a generator argument; "
                          f"allowed: {', '.join(allowed)}")
    return kwargs


# --- Cache -------------------------------------------------------------------------------------


def input_files(data_config) -> list[str]:
    """The files the dataset of `config.data` is read from: the interactions file and, for a
    log without a category column, the metadata companion beside it (`metadata_lib.
    companion_files`); [] for synthetic data. Paths as configured."""
    config = _as_dict(data_config)
    fmt = config.get("format")
    if fmt == "synthetic":
        return []
    path = config.get("path", "")
    has_categories = fmt == "taobao" or (fmt == "csv" and config.get("category_column"))
    return [path] + ([] if has_categories else metadata_lib.companion_files(path))


def _key_material(config: dict) -> dict:
    """What the cached dataset depends on: the data config and the input files."""
    material = {
        "version": CACHE_VERSION,
        "config": {k: v for k, v in sorted(config.items()) if k not in _NOT_IN_KEY},
    }
    if config["format"] != "synthetic":
        material["files"] = {p: cache_lib.fingerprint(p) for p in input_files(config)
                             if os.path.isfile(p)}
    return material


def _cache_entry(data: SequenceData) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, JSON-serialisable rest) of a dataset."""
    arrays = {name: getattr(data, name) for name in _ARRAYS + _OPTIONAL_ARRAYS
              if getattr(data, name) is not None}
    rest = {"num_items": data.num_items, "category_names": list(data.category_names),
            "item_titles": None if data.item_titles is None else list(data.item_titles),
            "summary": data.summary, "split": data.split}
    return arrays, rest


def _from_cache(cache: cache_lib.Cache) -> SequenceData | None:
    """The cached dataset, or None when absent, stale, unreadable or inconsistent."""
    entry = cache.load()
    if entry is None:
        return None
    arrays, rest = entry
    try:
        titles = rest["item_titles"]
        data = SequenceData(
            offsets=arrays["offsets"], items=arrays["items"], num_items=int(rest["num_items"]),
            item_raw_ids=arrays["item_raw_ids"], user_raw_ids=arrays["user_raw_ids"],
            item_counts=arrays["item_counts"], item_categories=arrays.get("item_categories"),
            category_names=tuple(rest["category_names"]),
            item_titles=None if titles is None else tuple(titles), summary=rest["summary"],
            split=rest["split"], user_split=arrays.get("user_split"))
        _check_consistent(data)
        return data
    except Exception as e:  # noqa: BLE001  (any damage means: rebuild)
        logging.warning("Cache %s is inconsistent (%s: %s); rebuilding", cache.npz_path,
                        type(e).__name__, e)
        return None


def _check_consistent(data: SequenceData):
    """Raises ValueError when the arrays do not fit together (e.g. a damaged cache)."""
    m1 = data.num_items + 1
    ok = (data.offsets.dtype == np.int64 and data.items.dtype == np.int32
          and data.split in SPLITS
          and data.offsets[0] == 0 and data.offsets[-1] == len(data.items)
          and np.all(np.diff(data.offsets) >= MIN_INTERACTIONS[data.split])
          and len(data.user_raw_ids) == data.num_users
          and data.item_raw_ids.shape == data.item_counts.shape == (m1,)
          and (data.item_categories is None or data.item_categories.shape == (m1,))
          and (data.item_titles is None or len(data.item_titles) == m1)
          and (data.user_split is None) == (data.split == "leave_one_out")
          and (data.user_split is None or data.user_split.shape == (data.num_users,))
          and data.items.min() >= 1 and data.items.max() <= data.num_items)
    if not ok:
        raise ValueError("arrays are inconsistent")


def _attach_metadata(item_raw_ids: np.ndarray, metadata: metadata_lib.ItemMetadata | None):
    """(item_categories [M+1] int32, category_names, item_titles [M+1]) for remapped ids."""
    if metadata is None:
        return None, (), None
    names = metadata.genre_names
    index = {name: i for i, name in enumerate(names)}
    raw = item_raw_ids[1:].tolist()
    first_genres = [metadata.genres.get(r) or (None,) for r in raw]
    categories = np.array([-1] + [index.get(g[0], -1) for g in first_genres], np.int32)
    titles = ("",) + tuple(metadata.titles.get(r, "") for r in raw)
    return categories, names, titles
