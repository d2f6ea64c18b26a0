"""Preprocessing: interaction log -> filtered, remapped, leave-one-out CSR sequences, cached.

Rules (DESIGN.md section 3), in this order:
  1. Items with fewer than `data.min_item_interactions` interactions are dropped (one pass).
  2. Users with fewer than max(`data.min_user_interactions`, 3) remaining interactions are
     dropped (leave-one-out needs 3).
  3. Each user's interactions are sorted by timestamp, stably (ties keep file order); users by
     raw id.
  4. Leave-one-out: the last item of a user is the test target, the one before it the
     validation target, the rest the training sequence.
  5. Items get ids 1..M by descending count in the training parts, ties by ascending raw id;
     items seen only as validation/test targets come last, by raw id. 0 is padding.
Repeated (user, item) pairs are kept as separate events and counted in the summary
("duplicate_interactions").

The result is cached in `cache_dir` as `dataset-<key>.npz` (arrays) + `dataset-<key>.json`
(names, titles, summary), where the key hashes the data config and, for files, the size,
mtime and first/last MiB of the interactions file and of its metadata companions. Files are
written atomically; a stale, unreadable or inconsistent cache is rebuilt.
"""

import dataclasses
import hashlib
import inspect
import json
import os
import tempfile

import numpy as np
from absl import logging

from sine_jax.data import metadata as metadata_lib
from sine_jax.data import readers, synthetic
from sine_jax.errors import ConfigError, DataError, SineError

FORMATS = ("synthetic",) + readers.FORMATS
PLANNED_FORMATS = ("amazon", "taobao", "csv")
MIN_INTERACTIONS = 3  # leave-one-out: at least one training item, a validation and a test target
CACHE_VERSION = 1  # bump when the preprocessing or the cache layout changes
_FINGERPRINT_BYTES = 1 << 20
_NOT_IN_KEY = ("cache_dir",)  # data config fields that do not change the data
_ARRAYS = ("offsets", "items", "item_raw_ids", "user_raw_ids", "item_counts")


@dataclasses.dataclass(frozen=True, eq=False)
class SequenceData:
    """Every user's full sequence in time order, as CSR arrays, with remapped item ids.

    Attributes:
        offsets: [U+1] int64 offsets into `items`; user u owns items[offsets[u]:offsets[u+1]].
        items: [N] int32 remapped ids 1..M.
        num_items: M (ids 1..M; 0 = padding).
        item_raw_ids: [M+1] int64 raw id of each remapped id; [0] = -1.
        user_raw_ids: [U] int64, ascending.
        item_counts: [M+1] int64 count in the training parts (0 for padding), non-increasing.
        item_categories: [M+1] int32 index into `category_names` of the item's first genre /
            category; -1 for padding and unknown. None without metadata.
        category_names: the genre / category names; () without metadata.
        item_titles: [M+1] titles, "" for padding and unknown. None without metadata.
        summary: users, items, interactions, dropped ({reason: count}), bad_rows, and more (see
            `preprocess`); JSON-serialisable.
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

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    def train_sequence(self, u: int) -> np.ndarray:
        """[len - 2] int32: user u's training items, oldest first."""
        return self.items[self.offsets[u]:self.offsets[u + 1] - 2]

    def valid_target(self, u: int) -> int:
        return int(self.items[self.offsets[u + 1] - 2])

    def test_target(self, u: int) -> int:
        return int(self.items[self.offsets[u + 1] - 1])


def load_dataset(data_config, cache_dir: str | None) -> SequenceData:
    """Reads, preprocesses and caches the dataset that `config.data` describes.

    Args:
        data_config: `config.data` (ConfigDict or dict): format, path, on_bad_row,
            min_user_interactions, min_item_interactions, synthetic (num_users, num_items,
            num_categories, seed, and any other `synthetic.generate` argument).
        cache_dir: where to cache the result; None or "" = no cache.

    Returns:
        The dataset.

    Raises:
        ConfigError: an unknown format or a bad field value.
        SineError: a planned format whose reader does not exist yet.
        DataError: unreadable or bad input data.
    """
    config = _as_dict(data_config)
    fmt = config.get("format")
    if fmt in PLANNED_FORMATS:
        raise SineError(f"data.format={fmt!r}: the {fmt} reader is not implemented yet; "
                        f"implemented: {', '.join(FORMATS)}")
    if fmt not in FORMATS:
        raise ConfigError(f"data.format={fmt!r} is not allowed; allowed: {', '.join(FORMATS)} "
                          f"(planned: {', '.join(PLANNED_FORMATS)})")
    min_user = _non_negative_int(config, "min_user_interactions", MIN_INTERACTIONS)
    min_item = _non_negative_int(config, "min_item_interactions", 1)
    if fmt != "synthetic" and not config.get("path"):
        raise ConfigError(f"data.path is empty: name the interactions file for "
                          f"data.format={fmt!r}")
    key_material = _key_material(config)
    cache = _cache_paths(cache_dir, key_material) if cache_dir else None
    data = _load_cache(*cache, key_material) if cache else None
    if data is not None:
        logging.info("Dataset from cache %s", cache[0])
    else:
        if fmt == "synthetic":
            interactions, metadata = synthetic.generate(**_synthetic_kwargs(config))
        else:
            interactions = readers.read_interactions(config["path"], fmt,
                                                     config.get("on_bad_row", "error"))
            metadata = metadata_lib.read_item_metadata(config["path"])
        data = preprocess(interactions, metadata, min_user_interactions=min_user,
                          min_item_interactions=min_item)
        if cache:
            _save_cache(data, *cache, key_material)
    logging.info("%s", format_summary(data))
    return data


def preprocess(interactions: readers.Interactions, metadata: metadata_lib.ItemMetadata | None,
               *, min_user_interactions: int = MIN_INTERACTIONS,
               min_item_interactions: int = 1) -> SequenceData:
    """Filters, sorts, splits and remaps a log (the module docstring's rules).

    Args:
        interactions: the raw log.
        metadata: titles and genres by raw item id, or None.
        min_user_interactions: users with fewer interactions are dropped (at least 3 always).
        min_item_interactions: items with fewer interactions are dropped (one pass, first).

    Returns:
        The dataset. Its summary holds: source, users, items, interactions, dropped
        ({reason: count}), bad_rows, bad_row_lines, duplicate_interactions, sequence_length
        (min, median, mean, max), categories, items_without_category.

    Raises:
        DataError: no user is left.
    """
    users, items, timestamps = interactions.users, interactions.items, interactions.timestamps
    dropped = {}
    raw_item_ids, item_index, counts = np.unique(items, return_inverse=True, return_counts=True)
    keep = counts[item_index] >= min_item_interactions
    dropped["items_below_min_item_interactions"] = int(np.sum(counts < min_item_interactions))
    dropped["interactions_of_those_items"] = int(np.sum(~keep))
    users, items, timestamps = users[keep], items[keep], timestamps[keep]

    min_user = max(min_user_interactions, MIN_INTERACTIONS)
    _, user_index, counts = np.unique(users, return_inverse=True, return_counts=True)
    keep = counts[user_index] >= min_user
    dropped["users_below_min_user_interactions"] = int(np.sum(counts < min_user))
    dropped["interactions_of_those_users"] = int(np.sum(~keep))
    if not np.any(keep):
        raise DataError(f"{interactions.path}: no user has at least {min_user} interactions "
                        f"after filtering")
    users, items, timestamps = users[keep], items[keep], timestamps[keep]

    order = np.lexsort((timestamps, users))  # stable: ties keep file order
    users, items = users[order], items[order]
    user_raw_ids, user_index = np.unique(users, return_inverse=True)
    lengths = np.bincount(user_index)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    position = np.arange(len(items)) - offsets[user_index]
    is_train = position < lengths[user_index] - 2

    raw_item_ids, item_index = np.unique(items, return_inverse=True)
    train_counts = np.bincount(item_index[is_train], minlength=len(raw_item_ids))
    by_popularity = np.lexsort((raw_item_ids, -train_counts))
    new_id = np.empty(len(raw_item_ids), np.int32)
    new_id[by_popularity] = np.arange(1, len(raw_item_ids) + 1, dtype=np.int32)
    item_raw_ids = np.concatenate([[-1], raw_item_ids[by_popularity]]).astype(np.int64)
    remapped = new_id[item_index]

    categories, names, titles = _attach_metadata(item_raw_ids, metadata)
    summary = {
        "source": interactions.path,
        "users": len(user_raw_ids),
        "items": len(raw_item_ids),
        "interactions": len(remapped),
        "dropped": dropped,
        "bad_rows": interactions.num_bad_rows,
        "bad_row_lines": list(interactions.bad_row_lines),
        "duplicate_interactions": _count_duplicates(user_index, remapped, len(raw_item_ids)),
        "sequence_length": {"min": int(lengths.min()), "median": float(np.median(lengths)),
                            "mean": float(lengths.mean()), "max": int(lengths.max())},
        "categories": len(names),
        "items_without_category": None if categories is None else int(np.sum(categories[1:] < 0)),
    }
    return SequenceData(
        offsets=offsets,
        items=remapped,
        num_items=len(raw_item_ids),
        item_raw_ids=item_raw_ids,
        user_raw_ids=user_raw_ids.astype(np.int64),
        item_counts=np.concatenate([[0], train_counts[by_popularity]]).astype(np.int64),
        item_categories=categories,
        category_names=names,
        item_titles=titles,
        summary=summary,
    )


def _count_duplicates(user_index: np.ndarray, items: np.ndarray, num_items: int) -> int:
    """Number of events that repeat an earlier (user, item) pair."""
    pairs = np.sort(user_index.astype(np.int64) * (num_items + 1) + items)
    return int(np.count_nonzero(pairs[1:] == pairs[:-1]))


def format_summary(data: SequenceData) -> str:
    """A few lines describing the dataset, for the log."""
    s = data.summary
    lengths = s["sequence_length"]
    lines = [
        (f"Dataset {s['source']}: {s['users']:,} users, {s['items']:,} items, "
         f"{s['interactions']:,} interactions"),
        (f"  sequence length min/median/mean/max: {lengths['min']} / {lengths['median']:g} / "
         f"{lengths['mean']:.1f} / {lengths['max']}"),
        "  dropped: " + ", ".join(f"{k}={v:,}" for k, v in s["dropped"].items()),
        f"  bad rows skipped: {s['bad_rows']:,}"
        + (f" (first at lines {s['bad_row_lines']})" if s["bad_rows"] else ""),
        f"  duplicate (user, item) events kept: {s['duplicate_interactions']:,}",
    ]
    if data.item_categories is None:
        lines.append("  no item metadata")
    else:
        lines.append(f"  {s['categories']} categories; items without one: "
                     f"{s['items_without_category']:,}")
    return "\n".join(lines)


def _as_dict(config) -> dict:
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


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


def _key_material(config: dict) -> dict:
    """What the cached dataset depends on (JSON-serialisable)."""
    material = {
        "version": CACHE_VERSION,
        "config": {k: v for k, v in sorted(config.items()) if k not in _NOT_IN_KEY},
    }
    if config["format"] != "synthetic":
        path = config["path"]
        directory = os.path.dirname(os.path.abspath(path))
        companions = [os.path.join(directory, n) for n in metadata_lib.COMPANIONS + ("u.genre",)]
        material["files"] = {p: _fingerprint(p) for p in [path] + companions
                             if os.path.isfile(p)}
    return json.loads(json.dumps(material, sort_keys=True, default=str))


def _fingerprint(path: str) -> dict:
    """Size, mtime and a hash of the first and last MiB of a file."""
    stat = os.stat(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(_FINGERPRINT_BYTES))
        if stat.st_size > _FINGERPRINT_BYTES:
            f.seek(max(stat.st_size - _FINGERPRINT_BYTES, _FINGERPRINT_BYTES))
            digest.update(f.read())
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}


def _cache_paths(cache_dir: str, key_material: dict) -> tuple[str, str]:
    key = hashlib.sha256(json.dumps(key_material, sort_keys=True).encode()).hexdigest()[:24]
    base = os.path.join(cache_dir, f"dataset-{key}")
    return base + ".npz", base + ".json"


def _load_cache(npz_path: str, json_path: str, key_material: dict) -> SequenceData | None:
    """The cached dataset, or None when absent, stale, unreadable or inconsistent."""
    if not (os.path.exists(npz_path) and os.path.exists(json_path)):
        return None
    try:
        with open(json_path, encoding="utf-8") as f:
            sidecar = json.load(f)
        if sidecar["key_material"] != key_material:
            logging.warning("Cache %s is stale; rebuilding", json_path)
            return None
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        categories = arrays.get("item_categories")
        titles = sidecar["item_titles"]
        data = SequenceData(
            offsets=arrays["offsets"], items=arrays["items"], num_items=int(sidecar["num_items"]),
            item_raw_ids=arrays["item_raw_ids"], user_raw_ids=arrays["user_raw_ids"],
            item_counts=arrays["item_counts"], item_categories=categories,
            category_names=tuple(sidecar["category_names"]),
            item_titles=None if titles is None else tuple(titles), summary=sidecar["summary"])
        _check_consistent(data)
        return data
    except Exception as e:  # noqa: BLE001  (any damage means: rebuild)
        logging.warning("Cache %s is unreadable (%s: %s); rebuilding", npz_path,
                        type(e).__name__, e)
        return None


def _check_consistent(data: SequenceData):
    """Raises ValueError when the arrays do not fit together (e.g. a damaged cache)."""
    m1 = data.num_items + 1
    ok = (data.offsets.dtype == np.int64 and data.items.dtype == np.int32
          and data.offsets[0] == 0 and data.offsets[-1] == len(data.items)
          and np.all(np.diff(data.offsets) >= MIN_INTERACTIONS)
          and len(data.user_raw_ids) == data.num_users
          and data.item_raw_ids.shape == data.item_counts.shape == (m1,)
          and (data.item_categories is None or data.item_categories.shape == (m1,))
          and (data.item_titles is None or len(data.item_titles) == m1)
          and data.items.min() >= 1 and data.items.max() <= data.num_items)
    if not ok:
        raise ValueError("arrays are inconsistent")


def _save_cache(data: SequenceData, npz_path: str, json_path: str, key_material: dict):
    """Writes the cache atomically (tmp file + os.replace); a failure only logs a warning."""
    arrays = {name: getattr(data, name) for name in _ARRAYS}
    if data.item_categories is not None:
        arrays["item_categories"] = data.item_categories
    sidecar = {"key_material": key_material, "num_items": data.num_items,
               "category_names": list(data.category_names),
               "item_titles": None if data.item_titles is None else list(data.item_titles),
               "summary": data.summary}
    try:
        os.makedirs(os.path.dirname(npz_path), exist_ok=True)
        _atomic_write(npz_path, lambda f: np.savez(f, **arrays))
        _atomic_write(json_path, lambda f: f.write(json.dumps(sidecar).encode("utf-8")))
        logging.info("Cached the dataset in %s", npz_path)
    except OSError as e:
        logging.warning("Could not cache the dataset in %s: %s", npz_path, e)


def _atomic_write(path: str, write):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


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
