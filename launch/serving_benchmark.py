"""Serving benchmark: user-encoder throughput and per-query retrieval latency (docs/serving.md).

A trained run, through its export (write it first with --mode=export): encoder throughput,
end-to-end latency of one `recommend` call, HR@N / NDCG@N of the recommendations for every
user's validation and test target (compared with results.json), and retrieval with the
validation users' vectors as queries:

  python launch/serving_benchmark.py --config=configs/movielens.py --workdir=runs/ml1m \
      --config.data.path=data/ml-1m-subset.dat \
      --out=runs/serving_benchmark/ml1m.json

A synthetic catalogue (retrieval only), random item embeddings, D = 128:

  python launch/serving_benchmark.py --num_items=1000000 --dim=128 --catalogue=clustered \
      --kinds=flat,ivf --ivf_lists=1024 --out=runs/serving_benchmark/synthetic_1m.json

Latency is per query, one query per search call (p50 and p99 over --queries calls, after a
warm-up), with one faiss thread by default; recall@100 is against exact search (IndexFlatIP)
on the same queries.
"""

import json
import os
import sys
import time

import faiss
import numpy as np
from absl import flags
from ml_collections import config_flags

from sine_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config of the trained run.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Trained run with an export/ folder.")
_NUM_ITEMS = flags.DEFINE_integer("num_items", 0, "Synthetic catalogue size (no --workdir).")
_DIM = flags.DEFINE_integer("dim", 128, "Synthetic catalogue: embedding dim D.")
_CATALOGUE = flags.DEFINE_enum(
    "catalogue",
    "clustered",
    ["gaussian", "clustered"],
    "Synthetic catalogue: i.i.d. N(0, 1) items and queries, or items and queries around "
    "2000 N(0, 1) centres plus N(0, noise^2) noise: closer to learned embeddings.",
)
_NOISE = flags.DEFINE_float("noise", 1.0, "Clustered catalogue: noise scale.")
_THREADS = flags.DEFINE_integer(
    "threads", 1, "faiss OpenMP threads (1: one query per core, as a service would run)."
)
_KINDS = flags.DEFINE_list("kinds", ["flat", "hnsw", "ivf"], "Indexes to measure.")
_HNSW_EF_SEARCH = flags.DEFINE_list("hnsw_ef_search", ["64", "128", "256"], "HNSW efSearch.")
_IVF_PROBE = flags.DEFINE_list("ivf_probe", ["8", "16", "64"], "IVF cells visited.")
_IVF_LISTS = flags.DEFINE_integer("ivf_lists", 0, "IVF cells; 0 = serving.default_ivf_lists.")
_QUERIES = flags.DEFINE_integer("queries", 1000, "Single-query searches timed.")
_USERS = flags.DEFINE_integer("users", 2048, "Histories encoded for the throughput.")
_SEED = flags.DEFINE_integer("seed", 0, "Synthetic catalogue and query seed.")
_OUT = flags.DEFINE_string("out", None, "JSON file for the results (also printed).")

TOP_K = 100


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    ms = 1e3 * np.asarray(seconds)
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def time_single_queries(fn, queries: np.ndarray) -> dict[str, float]:
    """Calls fn(query [1, D]) per query, after 10 warm-up calls; latency percentiles."""
    for q in queries[:10]:
        fn(q[None])
    times = []
    for q in queries:
        start = time.perf_counter()
        fn(q[None])
        times.append(time.perf_counter() - start)
    return percentiles_ms(times)


def retrieval(embeddings: np.ndarray, queries: np.ndarray, serving) -> list[dict]:
    """Build time, per-query latency and recall@100 of each index kind and search setting."""
    exact = serving.build_index(embeddings, "flat")
    _, truth = serving.search(exact, queries, TOP_K)
    rows = []
    for kind in _KINDS.value:
        start = time.perf_counter()
        index = serving.build_index(embeddings, kind, ivf_lists=_IVF_LISTS.value, seed=_SEED.value)
        build_s = time.perf_counter() - start
        if kind == "hnsw":
            settings = [{"ef_search": int(e)} for e in _HNSW_EF_SEARCH.value]
        elif kind == "ivf":
            settings = [{"probe": int(p)} for p in _IVF_PROBE.value]
        else:
            settings = [{}]
        for setting in settings:
            row = {"index": kind, **setting, "build_s": round(build_s, 2)}
            if kind == "ivf":
                row["ivf_lists"] = faiss.downcast_index(index).nlist
            row.update(
                time_single_queries(
                    lambda q, index=index, s=setting: serving.search(index, q, TOP_K, **s),
                    queries,
                )
            )
            start = time.perf_counter()
            _, found = serving.search(index, queries, TOP_K, **setting)  # all queries at once
            row["batch_queries_per_s"] = len(queries) / (time.perf_counter() - start)
            hits = [len(np.intersect1d(t, f[f >= 0])) for t, f in zip(truth, found)]
            row["recall_at_100"] = float(np.mean(hits)) / TOP_K
            print(json.dumps(_rounded(row)), flush=True)
            rows.append(row)
    return rows


def synthetic_catalogue(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(items [M, D], queries [Q, D]) float32."""
    m, d, q = _NUM_ITEMS.value, _DIM.value, _QUERIES.value
    if _CATALOGUE.value == "gaussian":
        items = rng.standard_normal((m, d), dtype=np.float32)
        return items, rng.standard_normal((q, d), dtype=np.float32)
    centres = rng.standard_normal((2000, d), dtype=np.float32)
    items = centres[rng.integers(0, len(centres), m)]
    items += _NOISE.value * rng.standard_normal((m, d), dtype=np.float32)
    queries = centres[rng.integers(0, len(centres), q)]
    queries += _NOISE.value * rng.standard_normal((q, d), dtype=np.float32)
    return items, queries


def input_histories(data, arrays: dict[str, np.ndarray], column: str) -> list[list]:
    """Per evaluated user, the original ids of the nonzero entries of arrays[column] [U, H]."""
    return [data.item_raw_ids[row[row > 0]].tolist() for row in arrays[column]]


def metrics_from_recommendations(data, recommender, max_seq_len: int) -> dict:
    """HR@N and NDCG@N of the top 100 recommended (history excluded) for each user's validation
    and test target, and their largest difference from WORKDIR/results.json (leave-one-out)."""
    from sine_jax.data import pipeline

    with open(os.path.join(_WORKDIR.value, "results.json")) as f:
        reference = json.load(f)
    out = {}
    for split in ("valid", "test"):
        arrays = pipeline.eval_arrays(data, split, max_seq_len=max_seq_len)
        histories = input_histories(data, arrays, "exclude")  # the whole input, in order
        targets = data.item_raw_ids[arrays["target"]]
        start = time.perf_counter()
        results = recommender.recommend(histories, top_n=TOP_K)
        seconds = time.perf_counter() - start
        ranks = np.array(
            [
                r["items"].index(t) + 1 if t in r["items"] else TOP_K + 1
                for r, t in zip(results, targets)
            ]
        )
        metrics = {}
        for k in (10, 50, 100):
            metrics[f"HR@{k}"] = float(np.mean(ranks <= k))
            metrics[f"NDCG@{k}"] = float(np.mean(np.where(ranks <= k, 1 / np.log2(1 + ranks), 0)))
        out[split] = {
            **metrics,
            "max_abs_diff_vs_results_json": max(
                abs(v - reference[split][k]) for k, v in metrics.items()
            ),
            "users": len(histories),
            "users_per_s_end_to_end": len(histories) / seconds,
        }
    return out


def trained_run(serving) -> dict:
    """Encoder throughput, end-to-end latency and metrics of WORKDIR/export, validation users."""
    from sine_jax import train
    from sine_jax.data import pipeline

    trained = train.restore_best(_CONFIG.value, _WORKDIR.value)
    data = trained.data
    n = _CONFIG.value.model.max_seq_len
    arrays = pipeline.eval_arrays(data, "valid", max_seq_len=n)
    histories = input_histories(data, arrays, "history")[: _USERS.value]  # the encoder's window
    recommender = serving.Recommender(os.path.join(_WORKDIR.value, "export"))
    rows, _ = recommender.lookup(histories)
    result = {"num_items": recommender.num_items, "embed_dim": recommender.manifest["embed_dim"]}

    encode = {}
    for batch in (1, serving.MAX_BATCH):
        recommender.encode_rows(rows[:batch])  # compiles this batch shape
        calls = max(1, len(rows) // batch)
        start = time.perf_counter()
        for first in range(0, calls * batch, batch):
            recommender.encode_rows(rows[first : first + batch])
        encode[f"batch_{batch}_users_per_s"] = calls * batch / (time.perf_counter() - start)
    result["encode"] = encode

    def recommend_one(i):
        recommender.recommend([histories[i % len(histories)]], top_n=10)

    recommend_one(0)
    times = []
    for i in range(_QUERIES.value):
        start = time.perf_counter()
        recommend_one(i)
        times.append(time.perf_counter() - start)
    result["recommend_one_history_flat"] = percentiles_ms(times)
    if data.split == "leave_one_out":  # held-out users have several targets: not compared
        result["metrics_from_recommendations"] = metrics_from_recommendations(data, recommender, n)
    queries = recommender.encode_rows(rows[: _QUERIES.value])["user_vector"]
    result["retrieval"] = retrieval(recommender.item_embeddings, queries, serving)
    return result


def main(argv):
    del argv
    from sine_jax import serving

    if (_WORKDIR.value is None) == (_NUM_ITEMS.value == 0):
        raise cli.UsageError("give either --config and --workdir, or --num_items")
    faiss.omp_set_num_threads(_THREADS.value)
    setup = {
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "cpus": os.cpu_count(),
        "command": " ".join(["python launch/serving_benchmark.py", *sys.argv[1:]]),
    }
    if _WORKDIR.value is not None:
        result = {"run": _WORKDIR.value, **trained_run(serving)}
    else:
        items, queries = synthetic_catalogue(np.random.default_rng(_SEED.value))
        result = {
            "catalogue": _CATALOGUE.value,
            "noise": _NOISE.value if _CATALOGUE.value == "clustered" else None,
            "num_items": len(items),
            "embed_dim": items.shape[1],
            "retrieval": retrieval(items, queries, serving),
        }
    result["setup"] = setup
    text = json.dumps(_rounded(result), indent=2)
    print(text)
    if _OUT.value:
        os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
        with open(_OUT.value, "w") as f:
            f.write(text + "\n")


def _rounded(value):
    """Floats to 4 significant digits, for reading."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


if __name__ == "__main__":
    cli.run_app(main)
