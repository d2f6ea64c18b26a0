"""Export of a trained model as plain files that load without sine_jax (docs/serving.md).

`python -m sine_jax.main --config=... --workdir=DIR --mode=export` writes DIR/export/ from the
best checkpoint:

  manifest.json          format, sizes, every file's shape and dtype, the index settings, the
                         config, the best step and its metrics, versions
  item_ids.npy           [M] the original item id of each row: int64, or unicode for string
                         ids (Amazon ASINs; manifest "item_id_type": "int" | "str")
  item_embeddings.npy    float32 [M, D]: row r is the embedding of item item_ids[r]
  prototypes.npy         float32 [L, D]: the concept prototypes C
  item_metadata.json     {"titles": [M], "categories": [M]} when the dataset has metadata
  encoder.jax            the user encoder, `jax.export`-serialised (platforms cpu and cuda):
                         (item_embeddings [M, D], history int32 [b, n]) -> {user_vector [b, D],
                         interests [b, K, D], interest_weights [b, K], prototype_ids [b, K],
                         assignment [b, n, K]}; history holds rows + 1, left-padded with 0
  index.faiss            faiss inner-product index over item_embeddings (labels = rows)

The directory is written beside and renamed into place: never half-written.
"""

import json
import os
import shutil
from collections.abc import Callable
from typing import Any

import faiss
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from ml_collections import config_dict

from sine_jax import run_config, serving, step, train
from sine_jax import workdir as workdir_lib
from sine_jax.data import pipeline
from sine_jax.errors import ConfigError

PLATFORMS = ("cpu", "cuda")
ENCODER_OUTPUTS = ("user_vector", "interests", "interest_weights", "prototype_ids", "assignment")


def encoder_function(model: step.SplitModel, params: nnx.State) -> Callable:
    """(item_embeddings [M, D], history int32 [B, n]) -> the encoder outputs (a dict).

    Every parameter but the item table is a constant of the function; the table (the big
    one) is an argument without its padding row, which is re-added as zeros.
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    paths = [jax.tree_util.keystr(path) for path, _ in leaves]
    table_index = paths.index("['item_embedding'].value")
    constants = [np.asarray(leaf) for _, leaf in leaves]

    def encode(item_embeddings: jax.Array, history: jax.Array) -> dict[str, jax.Array]:
        pad = jnp.zeros((1, item_embeddings.shape[1]), item_embeddings.dtype)
        values = [jnp.asarray(c) for c in constants]
        values[table_index] = jnp.concatenate([pad, item_embeddings])  # [M + 1, D]
        encoding = model.merge(jax.tree.unflatten(treedef, values))(history)._asdict()
        return {name: encoding[name] for name in ENCODER_OUTPUTS}

    return encode


def export_encoder(
    model: step.SplitModel, params: nnx.State, *, num_items: int, embed_dim: int, max_seq_len: int
) -> jax.export.Exported:
    """The encoder for any batch size (symbolic `b`), lowered for `PLATFORMS`."""
    (batch,) = jax.export.symbolic_shape("b")
    return jax.export.export(jax.jit(encoder_function(model, params)), platforms=PLATFORMS)(
        jax.ShapeDtypeStruct((num_items, embed_dim), jnp.float32),
        jax.ShapeDtypeStruct((batch, max_seq_len), jnp.int32),
    )


def export_model(
    config: config_dict.ConfigDict, workdir: str, *, allow_input_change: bool = False
) -> dict[str, Any]:
    """Writes WORKDIR/export from the best checkpoint, holding the workdir's lock; returns
    the manifest. Raises SineError as `train.restore_best`, or ConfigError (`serving.*`)."""
    check_serving_config(config)
    with workdir_lib.lock(workdir):
        trained = train.restore_best(config, workdir, allow_input_change=allow_input_change)
        return write_export(os.path.join(workdir, "export"), trained, config, workdir=workdir)


def write_export(
    export_dir: str,
    trained: train.TrainedModel,
    config: config_dict.ConfigDict,
    *,
    workdir: str | None = None,
) -> dict[str, Any]:
    """Writes the export of `trained` (see the module docstring); returns the manifest.

    Args:
        export_dir: the directory to (re)write.
        trained: the model, its parameters and its dataset.
        config: the run's config (its `serving` fields choose the index).
        workdir: the run's directory; its results.json metrics go into the manifest.

    Raises:
        ConfigError: a bad `serving` field.
    """
    check_serving_config(config, trained.data.num_items)
    tmp = f"{export_dir}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        manifest = _write_files(tmp, trained, config, workdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _replace_dir(tmp, export_dir)
    return manifest


# Models whose encoder gives one user vector with SINE's interests (what serving reads).
EXPORTABLE_MODELS = ("sine", "sine_cate")


def check_serving_config(config: config_dict.ConfigDict, num_items: int | None = None) -> None:
    """Raises ConfigError naming the first bad `serving` field (or an unexportable model);
    with `num_items`, also IVF cells beyond the catalogue."""
    if config.model.name not in EXPORTABLE_MODELS:
        raise ConfigError(
            f"model.name={config.model.name!r}: --mode=export serves SINE's encoder (one user "
            f"vector and its interests); exportable: {', '.join(EXPORTABLE_MODELS)}"
        )
    serving_config = config.serving
    if serving_config.index not in serving.INDEX_KINDS:
        kinds = ", ".join(serving.INDEX_KINDS)
        raise ConfigError(f"serving.index={serving_config.index!r} is not one of {kinds}")
    for field in ("hnsw_neighbors", "hnsw_ef_construction", "hnsw_ef_search", "ivf_probe"):
        if serving_config[field] < 1:
            raise ConfigError(f"serving.{field}={serving_config[field]} must be >= 1")
    for field in ("ivf_lists", "recall_users"):
        if serving_config[field] < 0:
            raise ConfigError(f"serving.{field}={serving_config[field]} must be >= 0")
    if (num_items is not None and serving_config.index == "ivf"
            and serving_config.ivf_lists > num_items):
        raise ConfigError(
            f"serving.ivf_lists={serving_config.ivf_lists} must be at most the {num_items} "
            f"items (0 = {serving.default_ivf_lists(num_items)} for this catalogue)"
        )


def _write_files(
    tmp: str, trained: train.TrainedModel, config: config_dict.ConfigDict, workdir: str | None
) -> dict[str, Any]:
    """Writes every file of the export into `tmp`; returns the manifest."""
    data, params = trained.data, trained.params
    num_items = data.num_items  # the table may have padding rows past M (sharded training)
    table = np.asarray(params["item_embedding"][...], np.float32)[1 : num_items + 1]  # [M, D]
    prototypes = np.asarray(params["prototypes"][...], np.float32)  # [L, D]
    dim = table.shape[1]
    n = config.model.max_seq_len
    files = {}

    def save_array(name: str, array: np.ndarray) -> None:
        np.save(os.path.join(tmp, f"{name}.npy"), array)
        files[name] = {"path": f"{name}.npy", "shape": list(array.shape), "dtype": str(array.dtype)}

    raw_ids = data.item_raw_ids[1:]
    id_type = "int" if raw_ids.dtype.kind in "iu" else "str"
    save_array("item_ids", raw_ids.astype(np.int64 if id_type == "int" else str))
    save_array("item_embeddings", table)
    save_array("prototypes", prototypes)
    if data.item_titles is not None or data.item_categories is not None:
        titles = list(data.item_titles[1:]) if data.item_titles is not None else None
        categories = None
        if data.item_categories is not None:
            names = data.category_names
            categories = [names[c] if c >= 0 else None for c in data.item_categories[1:]]
        workdir_lib.write_json_atomic(
            os.path.join(tmp, "item_metadata.json"), {"titles": titles, "categories": categories}
        )
        files["item_metadata"] = {"path": "item_metadata.json"}

    encoder = export_encoder(
        trained.model, params, num_items=num_items, embed_dim=dim, max_seq_len=n
    )
    with open(os.path.join(tmp, "encoder.jax"), "wb") as f:
        f.write(encoder.serialize())
    files["encoder"] = {
        "path": "encoder.jax",
        "platforms": list(PLATFORMS),
        "inputs": {"item_embeddings": [num_items, dim], "history": ["b", n]},
        "outputs": {
            name: [d if isinstance(d, int) else str(d) for d in aval.shape]
            for name, aval in jax.tree.unflatten(encoder.out_tree, encoder.out_avals).items()
        },
    }

    serving_config = config.serving
    index = serving.build_index(
        table,
        serving_config.index,
        hnsw_neighbors=serving_config.hnsw_neighbors,
        hnsw_ef_construction=serving_config.hnsw_ef_construction,
        ivf_lists=serving_config.ivf_lists,
        seed=config.train.seed,
    )
    faiss.write_index(index, os.path.join(tmp, "index.faiss"))
    files["index"] = {"path": "index.faiss"}
    index_info = {
        "kind": serving_config.index,
        "metric": "inner_product",
        "hnsw_ef_search": serving_config.hnsw_ef_search,
        "ivf_probe": serving_config.ivf_probe,
    }
    if serving_config.index != "flat" and serving_config.recall_users:
        index_info["recall_at_100"] = _validation_recall(
            encoder, table, index, data, n, serving_config
        )
        index_info["recall_users"] = min(serving_config.recall_users, data.num_users)

    manifest = {
        "format": serving.FORMAT,
        "format_version": serving.FORMAT_VERSION,
        "num_items": num_items,
        "embed_dim": dim,
        "num_prototypes": prototypes.shape[0],
        "num_interests": config.model.num_interests,
        "max_seq_len": n,
        "item_id_type": id_type,
        "exclude_history": config.eval.mask_history,
        "files": files,
        "index": index_info,
        "best_step": trained.best_step,
        "metrics": _run_metrics(workdir),
        "config": run_config.with_resolved_switches(config.to_dict()),
        "environment": workdir_lib.environment(),
    }
    workdir_lib.write_json_atomic(os.path.join(tmp, serving.MANIFEST), manifest)
    return manifest


def _validation_recall(
    encoder: jax.export.Exported,
    table: np.ndarray,
    index: faiss.Index,
    data,
    max_seq_len: int,
    serving_config: config_dict.ConfigDict,
) -> float:
    """Recall@100 of the approximate index against exact search, for validation users."""
    history = pipeline.eval_arrays(data, "valid", max_seq_len=max_seq_len)["history"]
    history = history[: serving_config.recall_users]
    queries = np.asarray(jax.jit(encoder.call)(table, history)["user_vector"])
    return serving.recall_against_exact(
        index,
        table,
        queries,
        100,
        ef_search=serving_config.hnsw_ef_search,
        probe=serving_config.ivf_probe,
    )


def _run_metrics(workdir: str | None) -> dict[str, Any] | None:
    """Validation and test metrics of WORKDIR/results.json, if it exists."""
    path = os.path.join(workdir, "results.json") if workdir else None
    if not path or not os.path.isfile(path):
        return None
    with open(path) as f:
        results = json.load(f)
    return {key: results.get(key) for key in ("best_step", "valid", "test")}


def _replace_dir(tmp: str, target: str) -> None:
    """Renames `tmp` to `target`, replacing an existing `target`."""
    old = f"{target}.old{os.getpid()}"
    if os.path.exists(target):
        os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
