"""Recommendations from an export: faiss retrieval index, top-N, explanations.

An export (written by `sine_jax.export`; layout in docs/serving.md) is plain files: a JSON
manifest, numpy arrays, the user encoder serialised with `jax.export`, and a faiss index. This
module reads them with numpy, json, jax and faiss only, never the model code.

Shapes: B histories, n the encoder's window (max_seq_len), K interests, D dim, M items.
Ids: "item ids" are the dataset's original ids: integers, or strings for datasets with string
ids such as Amazon's ASINs (the manifest's "item_id_type"). Rows 0..M-1 index `item_ids.npy` and
`item_embeddings.npy` and label the faiss index; the encoder takes row + 1, 0 = padding.

Rules:
- A history lists original item ids, oldest first. The encoder sees its last n known items;
  excluding the history (the default, as the evaluation's `eval.mask_history`) removes all of
  its items from the results.
- An id that is not in the catalogue: `on_unknown="error"` (default) raises UnknownItemError
  naming it; `"skip"` drops it, and the result lists the dropped ids under "unknown". A history
  left with no known item then gets empty "items" and "scores". An empty history is an error.
- Scores are the inner product of the user vector and the item embedding (the model's logit).

Loading checks the export against its manifest (`Recommender`): every file named, inside the
export directory, loadable without executing code, of the recorded shape and dtype; finite
embeddings, distinct item ids, the encoder's input shapes and the index's size, dimension
and metric. A mismatch is a one-line SineError naming the file: an export that does not fit
together would otherwise return wrong items.
"""

import json
import numbers
import os
import sys
from collections.abc import Iterable, Sequence
from typing import IO, Any

import faiss
import jax
import numpy as np

from sine_jax.errors import ConfigError, DataError, SineError

MANIFEST = "manifest.json"
FORMAT = "sine_jax-export"
FORMAT_VERSION = 1
INDEX_KINDS = ("flat", "hnsw", "ivf")
ON_UNKNOWN = ("error", "skip")
MAX_BATCH = 256  # histories encoded at once; smaller batches are padded to a power of two
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


ItemId = int | str


class UnknownItemError(SineError):
    """A history holds an item id that is not in the export's catalogue."""


class ExportError(SineError):
    """An export that is damaged or does not match its manifest."""


# ---------------------------------------------------------------------------------------------
# Index.


def default_ivf_lists(num_items: int) -> int:
    """IVF cells: 4 sqrt(M), at most M / 39 (faiss wants >= 39 training points per cell)."""
    return max(1, min(int(4 * np.sqrt(num_items)), num_items // 39))


def build_index(
    embeddings: np.ndarray,
    kind: str = "flat",
    *,
    hnsw_neighbors: int = 32,
    hnsw_ef_construction: int = 200,
    ivf_lists: int = 0,
    seed: int = 0,
) -> faiss.Index:
    """A faiss inner-product index over the item embeddings; the label of row r is r.

    Args:
        embeddings: float32 [M, D].
        kind: "flat" (exact), "hnsw" (graph) or "ivf" (inverted lists over k-means cells).
        hnsw_neighbors: HNSW graph degree (faiss M).
        hnsw_ef_construction: HNSW candidate list while building.
        ivf_lists: IVF cells; 0 = `default_ivf_lists(M)`.
        seed: k-means seed (IVF).

    Returns:
        The index, with every row added.

    Raises:
        ConfigError: an unknown kind.
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    num_items, dim = x.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_neighbors, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = hnsw_ef_construction
    elif kind == "ivf":
        lists = ivf_lists or default_ivf_lists(num_items)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(x)
    else:
        raise ConfigError(f"serving.index={kind!r} is not one of {', '.join(INDEX_KINDS)}")
    index.add(x)
    return index


def search(
    index: faiss.Index, queries: np.ndarray, k: int, *, ef_search: int = 128, probe: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """The k best rows of each query by inner product (descending).

    Args:
        index: from `build_index` (or `faiss.read_index`).
        queries: float32 [B, D].
        k: results per query.
        ef_search: HNSW candidate list (raised to k when smaller).
        probe: IVF cells visited.

    Returns:
        scores float32 [B, k], rows int64 [B, k]; -1 rows (score -inf or garbage) where an
        approximate index found fewer than k.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(efSearch=max(ef_search, k))
    elif isinstance(inner, faiss.IndexIVF):
        params = faiss.SearchParametersIVF(nprobe=probe)
    else:
        params = None
    return index.search(queries, k, params=params)


def recall_against_exact(
    index: faiss.Index, embeddings: np.ndarray, queries: np.ndarray, k: int = 100, **search_args
) -> float:
    """Mean |approximate top-k intersect exact top-k| / k over the queries [B, D]."""
    exact = faiss.IndexFlatIP(embeddings.shape[1])
    exact.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    k = min(k, embeddings.shape[0])
    _, truth = exact.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    _, found = search(index, queries, k, **search_args)
    hits = [len(np.intersect1d(t, f[f >= 0])) for t, f in zip(truth, found)]
    return float(np.mean(hits)) / k


# ---------------------------------------------------------------------------------------------
# Loading an export, checked against its manifest.

_REQUIRED_FILES = ("item_ids", "item_embeddings", "prototypes", "encoder", "index")
_POSITIVE_INTS = ("num_items", "embed_dim", "num_prototypes", "max_seq_len")


def _mismatch(path: str, what: str) -> ExportError:
    return ExportError(f"{path}: {what}; write the export again with --mode=export")


def _read_manifest(path: str) -> dict[str, Any]:
    """The manifest, its format, sizes and file entries checked."""
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        raise _mismatch(path, f"unreadable ({type(e).__name__})") from None
    if not isinstance(manifest, dict) or (
        manifest.get("format"), manifest.get("format_version")
    ) != (FORMAT, FORMAT_VERSION):
        raise SineError(f"{path}: not a {FORMAT} version {FORMAT_VERSION} manifest")
    for key in _POSITIVE_INTS:
        value = manifest.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _mismatch(path, f"{key} is {value!r}, not a positive integer")
    manifest.setdefault("item_id_type", "int")
    if manifest["item_id_type"] not in ("int", "str"):
        raise _mismatch(path, f"item_id_type is {manifest['item_id_type']!r}, not int or str")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise _mismatch(path, "it has no 'files'")
    for name in _REQUIRED_FILES + (("item_metadata",) if "item_metadata" in files else ()):
        entry = files.get(name)
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise _mismatch(path, f"it has no file entry {name!r} with a 'path'")
    return manifest


def _export_file(export_dir: str, files: dict[str, Any], name: str) -> str:
    """The path of file `name`, which must lie inside the export directory."""
    relative = files[name]["path"]
    path = os.path.normpath(os.path.join(export_dir, relative))
    if os.path.isabs(relative) or os.path.relpath(path, export_dir).startswith(os.pardir):
        raise _mismatch(os.path.join(export_dir, MANIFEST),
                        f"file {name!r} points outside the export ({relative!r})")
    return path


def _load_array(path: str, entry: dict[str, Any], shape: tuple[int, ...], kind: str
                ) -> np.ndarray:
    """A .npy file (no pickles) of `shape`, dtype kind `kind` ("i" int64, "U" unicode, "f"
    float32) and the shape and dtype its manifest entry records."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise _mismatch(path, f"unreadable ({_first_line(e)})") from None
    expected_dtype = {"i": "int64", "f": "float32"}.get(kind)
    if array.dtype.kind != kind or (expected_dtype and str(array.dtype) != expected_dtype):
        raise _mismatch(path, f"has dtype {array.dtype}, expected {expected_dtype or 'unicode'}")
    if array.shape != shape:
        raise _mismatch(path, f"has shape {list(array.shape)}, the manifest's sizes give "
                              f"{list(shape)}")
    if entry.get("shape", list(shape)) != list(shape) or entry.get("dtype", str(array.dtype)) \
            != str(array.dtype):
        raise _mismatch(path, f"is {list(array.shape)} {array.dtype}, the manifest says "
                              f"{entry.get('shape')} {entry.get('dtype')}")
    return array


def _read_titles(path: str, num_items: int) -> list[str] | None:
    """item_metadata.json's titles ([M] strings, or None)."""
    try:
        with open(path, encoding="utf-8") as f:
            titles = json.load(f).get("titles")
    except (OSError, ValueError, RecursionError, AttributeError) as e:
        raise _mismatch(path, f"unreadable ({type(e).__name__})") from None
    if titles is not None and (
        not isinstance(titles, list) or len(titles) != num_items
        or not all(isinstance(t, str) for t in titles)
    ):
        raise _mismatch(path, f"titles must be a list of {num_items} strings")
    return titles


def _read_encoder(path: str, num_items: int, dim: int, max_seq_len: int) -> jax.export.Exported:
    """The `jax.export` encoder, whose inputs must be item_embeddings [M, D] float32 and
    history [b, n] int32."""
    try:
        with open(path, "rb") as f:
            encoder = jax.export.deserialize(bytearray(f.read()))
    except Exception:  # noqa: BLE001 - flatbuffers and jax raise many types on garbage
        raise _mismatch(path, "not a serialised jax.export function") from None
    shapes = [tuple(str(d) if not isinstance(d, int) else d for d in a.shape)
              for a in encoder.in_avals]
    dtypes = [str(a.dtype) for a in encoder.in_avals]
    if (len(shapes) != 2 or shapes[0] != (num_items, dim) or len(shapes[1]) != 2
            or shapes[1][1] != max_seq_len or dtypes != ["float32", "int32"]):
        raise _mismatch(path, f"takes {list(zip(shapes, dtypes))}, expected item_embeddings "
                              f"({num_items}, {dim}) float32 and history (b, {max_seq_len}) int32")
    outputs = jax.tree.unflatten(encoder.out_tree, encoder.out_avals)
    if not isinstance(outputs, dict) or not {"user_vector", "interest_weights",
                                             "prototype_ids", "assignment"} <= set(outputs):
        raise _mismatch(path, "does not return the encoder's outputs")
    return encoder


def _read_index(path: str, num_items: int, dim: int) -> faiss.Index:
    """The faiss index, which must hold the M item rows of dimension D, by inner product."""
    if not os.path.isfile(path):
        raise _mismatch(path, "no such file")
    try:
        index = faiss.read_index(path)
    except RuntimeError as e:
        raise _mismatch(path, f"not a faiss index ({_first_line(e)})") from None
    if index.ntotal != num_items or index.d != dim:
        raise _mismatch(path, f"holds {index.ntotal} vectors of dimension {index.d}, expected "
                              f"the {num_items} items of dimension {dim}")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise _mismatch(path, "does not rank by inner product")
    return index


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


# ---------------------------------------------------------------------------------------------
# Recommender.


class Recommender:
    """Top-N items and explanations for histories of original item ids, from an export.

    Attributes:
        manifest: the export's manifest.json.
        item_ids: [M] original id of each row (int64, or unicode for string ids).
        id_type: "int" or "str", the type of the item ids.
        item_embeddings: float32 [M, D].
        prototypes: float32 [L, D], the concept prototypes C.
        titles: [M] item titles, or None when the dataset had no metadata.
        index: the faiss index (labels = rows).
    """

    def __init__(self, export_dir: str):
        """Loads and checks the export (see the module docstring).

        Raises:
            SineError: no manifest; ExportError: a damaged export or one that does not
                match its manifest.
        """
        path = os.path.join(export_dir, MANIFEST)
        if not os.path.isfile(path):
            raise SineError(f"{export_dir}: no {MANIFEST}; write one with --mode=export")
        self.manifest = manifest = _read_manifest(path)
        num_items, dim = manifest["num_items"], manifest["embed_dim"]
        self.max_seq_len = manifest["max_seq_len"]
        self.id_type = manifest["item_id_type"]
        files = manifest["files"]

        def file(name: str) -> str:
            return _export_file(export_dir, files, name)

        id_kind = "i" if self.id_type == "int" else "U"
        self.item_ids = _load_array(file("item_ids"), files["item_ids"], (num_items,), id_kind)
        if len(np.unique(self.item_ids)) != num_items:
            raise _mismatch(file("item_ids"), "repeats an item id")
        self.item_embeddings = _load_array(
            file("item_embeddings"), files["item_embeddings"], (num_items, dim), "f"
        )
        if not np.isfinite(self.item_embeddings).all():
            raise _mismatch(file("item_embeddings"), "holds values that are not finite")
        self.prototypes = _load_array(
            file("prototypes"), files["prototypes"], (manifest["num_prototypes"], dim), "f"
        )
        self.titles = None
        if "item_metadata" in files:
            self.titles = _read_titles(file("item_metadata"), num_items)
        self.encoder = _read_encoder(file("encoder"), num_items, dim, self.max_seq_len)
        self.index = _read_index(file("index"), num_items, dim)
        index_info = manifest.get("index") if isinstance(manifest.get("index"), dict) else {}
        self._search_args = {
            "ef_search": int(index_info.get("hnsw_ef_search", 128)),
            "probe": int(index_info.get("ivf_probe", 16)),
        }
        self._order = np.argsort(self.item_ids, kind="stable")
        self._sorted_ids = self.item_ids[self._order]
        self._table = jax.device_put(self.item_embeddings)  # transferred once, not per call
        self._encode = jax.jit(self.encoder.call)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def rows(self, history: Iterable[ItemId]) -> tuple[np.ndarray, list[ItemId]]:
        """(rows int64 [<= len] of the known ids in order, the unknown ids in order).

        The ids must be of the export's id type (see `lookup`, which checks it); an integer
        outside int64 (no item has one) is unknown."""
        history = list(history)
        if self.id_type == "int":
            fits = np.array([_INT64_MIN <= i <= _INT64_MAX for i in history], bool)
            ids = np.array([i if ok else 0 for i, ok in zip(history, fits)], np.int64)
        else:
            fits = np.ones(len(history), bool)
            ids = np.asarray(history, dtype=str)
        pos = np.minimum(np.searchsorted(self._sorted_ids, ids), self.num_items - 1)
        known = fits & (self._sorted_ids[pos] == ids)
        return self._order[pos[known]], [i for i, k in zip(history, known) if not k]

    def encode_rows(self, rows: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Runs the exported encoder on histories given as rows (each oldest first).

        Returns:
            window int32 [B, n] (rows + 1 of the last n items, left-padded with 0),
            user_vector [B, D], interests [B, K, D], interest_weights [B, K] (e_k),
            prototype_ids int32 [B, K], assignment [B, n, K] (P(k|t)).
        """
        n = self.max_seq_len
        window = np.zeros((len(rows), n), np.int32)
        for b, r in enumerate(rows):
            last = np.asarray(r[-n:], np.int64)
            if len(last):
                window[b, n - len(last) :] = last + 1
        parts = []
        for start in range(0, len(rows), MAX_BATCH):
            chunk = window[start : start + MAX_BATCH]
            size = min(MAX_BATCH, 1 << (len(chunk) - 1).bit_length())  # few distinct shapes
            padded = np.pad(chunk, ((0, size - len(chunk)), (0, 0)))
            out = jax.device_get(self._encode(self._table, padded))
            parts.append({k: v[: len(chunk)] for k, v in out.items()})
        outputs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
        return {"window": window, **outputs}

    def search(
        self, user_vectors: np.ndarray, top_n: int, exclude: Sequence[np.ndarray] | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Top-N rows of each user vector, without the rows in its exclusion list.

        Args:
            user_vectors: float32 [B, D].
            top_n: N.
            exclude: per user, rows to leave out (or None).

        Returns:
            Per user: (rows int64 [<= N], scores float32 [<= N]), best first; fewer than N only
            when the catalogue (or an approximate index) has fewer candidates.
        """
        exclude = [np.unique(e) for e in exclude] if exclude is not None else None
        extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        k = min(top_n + extra, self.num_items)
        scores, rows = search(self.index, user_vectors, k, **self._search_args)
        results = []
        for b in range(len(user_vectors)):
            keep = rows[b] >= 0
            if exclude is not None:
                keep &= ~np.isin(rows[b], exclude[b])
            results.append((rows[b][keep][:top_n], scores[b][keep][:top_n]))
        return results

    def lookup(
        self, histories: Sequence[Sequence[ItemId]], on_unknown: str = "error"
    ) -> tuple[list[np.ndarray], list[list[ItemId]]]:
        """Rows of each history's known ids and its unknown ids (the module's rules).

        Raises:
            UnknownItemError: an unknown id with on_unknown="error" (names history and id).
            SineError: an empty history, an id of the wrong type, or a bad on_unknown.
        """
        if on_unknown not in ON_UNKNOWN:
            raise SineError(f"on_unknown={on_unknown!r} is not one of {', '.join(ON_UNKNOWN)}")
        rows, unknown = [], []
        for i, history in enumerate(histories):
            if len(history) == 0:
                raise SineError(f"history {i + 1} is empty")
            wrong = next((item for item in history if not self._has_id_type(item)), None)
            if wrong is not None:
                raise SineError(
                    f"history {i + 1}: item id {wrong!r} is not of this export's id type "
                    f"({self.id_type})"
                )
            known, missing = self.rows(history)
            if len(missing) and on_unknown == "error":
                raise UnknownItemError(
                    f"history {i + 1}: item id {missing[0]} is not among the {self.num_items} "
                    f"items of the export; --skip_unknown (on_unknown='skip') drops unknown ids"
                )
            rows.append(known)
            unknown.append(missing)
        return rows, unknown

    def _has_id_type(self, item: Any) -> bool:
        if self.id_type == "int":
            return isinstance(item, numbers.Integral) and not isinstance(item, bool)
        return isinstance(item, str)

    def recommend(
        self,
        histories: Sequence[Sequence[ItemId]],
        *,
        top_n: int = 10,
        exclude_history: bool = True,
        explain: bool = False,
        on_unknown: str = "error",
    ) -> list[dict[str, Any]]:
        """Top-N original item ids with scores for each history (see the module docstring).

        Args:
            histories: per user, original item ids, oldest first.
            top_n: N.
            exclude_history: leave the history's items out of the results.
            explain: add the K activated prototypes, their weights e_k (sum 1) and the items
                of the encoder's window assigned to each (argmax_k P(k|t)), in slot order;
                and each window item's P(k|t) over the K slots, oldest first.
            on_unknown: "error" or "skip".

        Returns:
            Per history: {"items": [ids], "scores": [floats]}, plus "explain":
            {"interests": [{"prototype", "weight", "items"} x K], "history": [{"item",
            "assignment": [K floats]} per window item]} when asked, plus "unknown":
            [ids] with on_unknown="skip".

        Raises:
            UnknownItemError: an unknown id with on_unknown="error".
            SineError: an empty history, an id of the wrong type, top_n < 1 or a bad on_unknown.
        """
        if top_n < 1:
            raise SineError(f"top_n={top_n} must be >= 1")
        rows, unknown = self.lookup(histories, on_unknown)
        results = [{"items": [], "scores": []} for _ in rows]
        if explain:
            for result in results:
                result["explain"] = {"interests": [], "history": []}
        active = [i for i, r in enumerate(rows) if len(r)]  # histories with a known item
        if active:
            encoded = self.encode_rows([rows[i] for i in active])
            exclude = [rows[i] for i in active] if exclude_history else None
            found = self.search(encoded["user_vector"], top_n, exclude)
            for j, i in enumerate(active):
                top_rows, scores = found[j]
                results[i]["items"] = self.item_ids[top_rows].tolist()
                results[i]["scores"] = [float(s) for s in scores]
                if explain:
                    results[i]["explain"] = self._explain(encoded, j)
        if on_unknown == "skip":
            for result, missing in zip(results, unknown):
                result["unknown"] = list(missing)
        return results

    def _explain(self, encoded: dict[str, np.ndarray], b: int) -> dict[str, Any]:
        """The activated interests of user b (prototype, weight e_k, assigned window items)
        and, for each item of the window, oldest first, its P(k|t) over the K interests."""
        window = encoded["window"][b]  # [n] rows + 1
        valid = window > 0
        assignment = encoded["assignment"][b]  # [n, K]
        slot = np.argmax(assignment, axis=-1)  # [n]
        interests = []
        for k, (proto, weight) in enumerate(
            zip(encoded["prototype_ids"][b], encoded["interest_weights"][b])
        ):
            members = window[valid & (slot == k)] - 1
            interests.append(
                {
                    "prototype": int(proto),
                    "weight": float(weight),
                    "items": self.item_ids[members].tolist(),
                }
            )
        history = [
            {"item": item, "assignment": [round(float(p), 6) for p in row]}
            for item, row in zip(self.item_ids[window[valid] - 1].tolist(), assignment[valid])
        ]
        return {"interests": interests, "history": history}

    def item_titles(self, item_ids: Iterable[ItemId]) -> list[str]:
        """Titles of original item ids ("" when unknown or without metadata)."""
        out = []
        for item in item_ids:
            rows, _ = self.rows([item])
            out.append(self.titles[rows[0]] if self.titles is not None and len(rows) else "")
        return out


# ---------------------------------------------------------------------------------------------
# Command line (`--mode=recommend`).


def parse_history(text: str, id_type: str = "int") -> list[ItemId]:
    """Parses "3,17,5" into [3, 17, 5] (or ["3", "17", "5"] for id_type "str"), oldest first."""
    ids = []
    for token in text.split(","):
        token = token.strip()
        if id_type == "str":
            if not token:
                raise DataError(f"--history: empty item id in {text!r}")
            ids.append(token)
            continue
        try:
            ids.append(int(token))
        except ValueError:
            raise DataError(f"--history: {token!r} is not an integer item id") from None
    return ids


def read_histories(path: str, id_type: str = "int") -> list[tuple[dict[str, Any], list[ItemId]]]:
    """Reads a JSONL file of histories; blank lines are skipped.

    Each line is a JSON array of original item ids (oldest first; integers, or strings for
    id_type "str"), or an object with such an array under "history"; the object's other keys
    (e.g. "user") are copied to the output.

    Returns:
        Per history: (keys to copy, item ids).

    Raises:
        DataError: `path:line: reason` for a bad line (not UTF-8, not JSON, not a history),
            or `path: reason` (unreadable, no history at all).
    """
    try:
        with open(path, "rb") as f:  # a pipe is fine (`--histories=/dev/stdin`)
            lines = f.read().splitlines()
    except OSError as e:
        raise DataError(f"{path}: {e.strerror}") from None
    if id_type == "int":
        kind, valid = "integer", lambda i: isinstance(i, int) and not isinstance(i, bool)
    else:
        kind, valid = "string", lambda i: isinstance(i, str)
    histories = []
    for number, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}:{number}: not UTF-8 text (byte {e.start + 1})") from None
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{number}: not JSON ({e.msg})") from None
        except RecursionError:
            raise DataError(f"{path}:{number}: JSON nested too deeply") from None
        extra = {}
        if isinstance(value, dict):
            extra = {k: v for k, v in value.items() if k != "history"}
            value = value.get("history")
        if not isinstance(value, list) or not all(valid(i) for i in value):
            raise DataError(
                f'{path}:{number}: expected a list of {kind} item ids or {{"history": [...]}}'
            )
        histories.append((extra, value))
    if not histories:
        raise DataError(f"{path}: no histories (the file is empty)")
    return histories


def print_recommendations(
    export_dir: str,
    *,
    history: str | None,
    histories_path: str | None,
    top_n: int,
    exclude_history: bool,
    explain: bool,
    on_unknown: str,
    out: IO[str] = sys.stdout,
) -> None:
    """`--mode=recommend`: one JSON object per history (its copied keys, then the result).

    Args:
        export_dir: the export.
        history: "ID,ID,..." (one history), or None.
        histories_path: a JSONL file of histories (see `read_histories`), or None.
        top_n, exclude_history, explain, on_unknown: see `Recommender.recommend`.
        out: where to print.
    """
    recommender = Recommender(export_dir)
    if history is not None:
        histories = [({}, parse_history(history, recommender.id_type))]
    else:
        histories = read_histories(histories_path, recommender.id_type)
    recommender.lookup([ids for _, ids in histories], on_unknown)  # errors before any output
    step = 4 * MAX_BATCH
    for start in range(0, len(histories), step):
        chunk = histories[start : start + step]
        results = recommender.recommend(
            [ids for _, ids in chunk],
            top_n=top_n,
            exclude_history=exclude_history,
            explain=explain,
            on_unknown=on_unknown,
        )
        for (extra, _), result in zip(chunk, results):
            out.write(json.dumps({**extra, **result}) + "\n")
        out.flush()
