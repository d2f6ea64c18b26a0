"""Export, retrieval index, recommend and explain (sine_jax/export.py, sine_jax/serving.py)."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap

import faiss
import grain
import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic
from sine_jax import checkpointing, evaluate, export, run_config, serving, train
from sine_jax.data import pipeline
from sine_jax.errors import ConfigError, DataError, SineError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_ARG = "--config=configs/synthetic.py:tiny"  # synthetic.get_config("tiny")


def _cli(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
    return subprocess.run(
        [sys.executable, "-m", "sine_jax.main", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained tiny model, exported with the command line: (workdir, TrainedModel)."""
    workdir = str(tmp_path_factory.mktemp("serving"))
    train.train_and_evaluate(synthetic.get_config("tiny"), workdir)
    proc = _cli(TINY_ARG, f"--workdir={workdir}", "--mode=export")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == {"export": f"{workdir}/export"}
    return workdir, train.restore_best(synthetic.get_config("tiny"), workdir)


@pytest.fixture(scope="module")
def recommender(run):
    return serving.Recommender(os.path.join(run[0], "export"))


def _valid_histories(trained):
    """Per user, the validation input (the whole training sequence) in original ids."""
    data = trained.data
    return [data.item_raw_ids[data.train_sequence(u)].tolist() for u in range(data.num_users)]


def test_export_reloads_without_sine_jax(run, tmp_path):
    workdir, trained = run
    arrays = pipeline.eval_arrays(trained.data, "valid", max_seq_len=20)
    np.save(tmp_path / "history.npy", arrays["history"])
    script = textwrap.dedent(
        """
        import importlib.abc, json, sys

        class NoSineJax(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] == "sine_jax":
                    raise ImportError("sine_jax must not be needed")

        sys.meta_path.insert(0, NoSineJax())
        import faiss, jax, numpy as np

        export_dir, out = sys.argv[1], sys.argv[2]
        with open(f"{export_dir}/manifest.json") as f:
            manifest = json.load(f)
        files = manifest["files"]
        arrays = {
            name: np.load(f"{export_dir}/{files[name]['path']}")
            for name in ("item_ids", "item_embeddings", "prototypes")
        }
        for name, array in arrays.items():
            assert list(array.shape) == files[name]["shape"], name
            assert str(array.dtype) == files[name]["dtype"], name
        with open(f"{export_dir}/{files['encoder']['path']}", "rb") as f:
            encoder = jax.export.deserialize(bytearray(f.read()))
        history = np.load(f"{out}/history.npy")
        encoded = encoder.call(arrays["item_embeddings"], history)
        index = faiss.read_index(f"{export_dir}/{files['index']['path']}")
        scores, rows = index.search(np.asarray(encoded["user_vector"]), 10)
        np.savez(f"{out}/loaded.npz", **arrays, user_vector=encoded["user_vector"],
                 interest_weights=encoded["interest_weights"], rows=rows, scores=scores)
        assert not any(m.split(".")[0] == "sine_jax" for m in sys.modules)
        """
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", script, os.path.join(workdir, "export"), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = np.load(tmp_path / "loaded.npz")
    params = trained.params
    num_items = trained.data.num_items  # the trained table also has padding rows past M
    np.testing.assert_array_equal(
        loaded["item_embeddings"], np.asarray(params["item_embedding"][...])[1 : num_items + 1]
    )
    np.testing.assert_array_equal(loaded["prototypes"], np.asarray(params["prototypes"][...]))
    np.testing.assert_array_equal(loaded["item_ids"], trained.data.item_raw_ids[1:])
    user_vectors, table = trained.model.queries_and_table(params, jnp.asarray(arrays["history"]))
    np.testing.assert_allclose(loaded["user_vector"], user_vectors, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loaded["interest_weights"].sum(-1), 1.0, rtol=1e-5)
    scores = np.asarray(user_vectors @ table[1 : num_items + 1].T)  # [U, M]
    np.testing.assert_allclose(
        loaded["scores"], np.take_along_axis(scores, loaded["rows"], axis=1), rtol=1e-4, atol=1e-5
    )


def _evaluation_top_n(trained, history, exclude, top_n):
    """Top-N original ids by the evaluation code's scores (`queries_and_table`), ties by id."""
    user_vectors, table = trained.model.queries_and_table(trained.params, jnp.asarray(history))
    scores = np.array(user_vectors @ table.T)  # [U, M + 1]
    scores[:, 0] = -np.inf  # padding
    if exclude is not None:
        np.put_along_axis(scores, exclude, -np.inf, axis=1)  # padding 0 again: harmless
    top = np.argsort(-scores, axis=1, kind="stable")[:, :top_n]
    return trained.data.item_raw_ids[top], np.take_along_axis(scores, top, axis=1)


@pytest.mark.parametrize("exclude_history", [True, False])
def test_recommend_reproduces_the_evaluation_ranking(run, recommender, exclude_history):
    _, trained = run
    arrays = pipeline.eval_arrays(trained.data, "valid", max_seq_len=20)
    top_n = 20
    results = recommender.recommend(
        _valid_histories(trained), top_n=top_n, exclude_history=exclude_history
    )
    expected_ids, expected_scores = _evaluation_top_n(
        trained, arrays["history"], arrays["exclude"] if exclude_history else None, top_n
    )
    got_ids = np.array([r["items"] for r in results])
    got_scores = np.array([r["scores"] for r in results])
    np.testing.assert_allclose(got_scores, expected_scores, rtol=1e-5, atol=1e-5)
    # Identical lists, except where two items' scores tie to float precision.
    differ = got_ids != expected_ids
    assert differ.mean() < 0.01
    assert np.all(np.abs(got_scores - expected_scores)[differ] < 1e-5)

    # The evaluation's target ranks agree with the positions in the recommended lists.
    rank_fn = evaluate.make_rank_fn(
        trained.model.queries_and_table,
        trained.model.mesh,
        mask_history=exclude_history,
        chunk_size=64,
        num_items=trained.data.num_items,
    )
    ranks = evaluate.compute_ranks(
        rank_fn, trained.params, arrays, batch_size=64, mesh=trained.model.mesh
    )
    # (The evaluation never excludes the target, even when the history holds it too.)
    repeat = np.any(arrays["exclude"] == arrays["target"][:, None], axis=1) & exclude_history
    targets = trained.data.item_raw_ids[arrays["target"]]
    for rank, target, items in zip(ranks[~repeat], targets[~repeat], got_ids[~repeat]):
        if target in items:
            assert rank == list(items).index(target) + 1
        else:
            assert rank > top_n
    assert np.any(ranks <= top_n)


def test_exclude_history_removes_every_history_item(run, recommender):
    _, trained = run
    histories = _valid_histories(trained)[:50]
    for history, result in zip(histories, recommender.recommend(histories, top_n=30)):
        assert len(result["items"]) == 30
        assert not set(history) & set(result["items"])
        assert result["scores"] == sorted(result["scores"], reverse=True)


def test_explanation(run, recommender):
    _, trained = run
    histories = _valid_histories(trained)[:40]
    results = recommender.recommend(histories, top_n=5, explain=True)
    k, num_prototypes = 4, 10
    for history, result in zip(histories, results):
        interests = result["explain"]["interests"]
        assert len(interests) == k
        weights = [i["weight"] for i in interests]
        assert sum(weights) == pytest.approx(1.0, abs=1e-5)
        assert all(w >= 0 for w in weights)
        prototypes = [i["prototype"] for i in interests]
        assert len(set(prototypes)) == k and all(0 <= p < num_prototypes for p in prototypes)
        # Every item of the encoder's window (the last 20) is assigned to exactly one interest.
        assigned = sorted(item for i in interests for item in i["items"])
        assert assigned == sorted(history[-20:])
        # ... and each window item's P(k|t), oldest first, sums to 1 with its argmax there.
        per_item = result["explain"]["history"]
        assert [row["item"] for row in per_item] == list(history[-20:])
        for row in per_item:
            assert len(row["assignment"]) == k
            assert sum(row["assignment"]) == pytest.approx(1.0, abs=1e-5)
            best = int(np.argmax(row["assignment"]))
            assert row["item"] in interests[best]["items"]


def test_explanation_matches_the_model(run, recommender):
    _, trained = run
    arrays = pipeline.eval_arrays(trained.data, "valid", max_seq_len=20)
    model = trained.model.merge(trained.params)
    encoding = model(jnp.asarray(arrays["history"][:8]))
    results = recommender.recommend(_valid_histories(trained)[:8], explain=True)
    for b, result in enumerate(results):
        interests = result["explain"]["interests"]
        assert [i["prototype"] for i in interests] == encoding.prototype_ids[b].tolist()
        np.testing.assert_allclose(
            [i["weight"] for i in interests], encoding.interest_weights[b], atol=1e-5
        )
        slot = np.argmax(np.asarray(encoding.assignment[b]), axis=-1)
        window = arrays["history"][b]
        np.testing.assert_allclose(
            [row["assignment"] for row in result["explain"]["history"]],
            np.asarray(encoding.assignment[b])[window > 0], atol=1e-5,
        )
        for k, interest in enumerate(interests):
            members = window[(window > 0) & (slot == k)]
            assert interest["items"] == trained.data.item_raw_ids[members].tolist()


def test_unknown_item_ids(recommender):
    known = recommender.item_ids[:3].tolist()
    unknown = int(recommender.item_ids.max()) + 7
    with pytest.raises(serving.UnknownItemError, match=f"history 2: item id {unknown} "):
        recommender.recommend([known, [known[0], unknown]])
    skipped = recommender.recommend(
        [[unknown, *known], known, [unknown]], on_unknown="skip", explain=True
    )
    plain = recommender.recommend([known])[0]
    assert skipped[0]["unknown"] == [unknown] and skipped[1]["unknown"] == []
    assert skipped[0]["items"] == plain["items"] == skipped[1]["items"]
    assert skipped[2] == {
        "items": [],
        "scores": [],
        "explain": {"interests": [], "history": []},
        "unknown": [unknown],
    }
    with pytest.raises(SineError, match="history 1 is empty"):
        recommender.recommend([[]])
    with pytest.raises(SineError, match="on_unknown"):
        recommender.recommend([known], on_unknown="ignore")


def test_top_n_larger_than_the_catalogue(recommender):
    history = recommender.item_ids[:5].tolist()
    (result,) = recommender.recommend([history], top_n=10_000)
    assert len(result["items"]) == recommender.num_items - 5
    (result,) = recommender.recommend([history], top_n=10_000, exclude_history=False)
    assert sorted(result["items"]) == sorted(recommender.item_ids.tolist())


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_index_records_its_recall(run, tmp_path, kind):
    _, trained = run
    config = synthetic.get_config("tiny")
    config.serving.index = kind
    config.serving.ivf_probe = 2
    manifest = export.write_export(str(tmp_path / "export"), trained, config)
    info = manifest["index"]
    assert info["kind"] == kind and info["recall_users"] == 300
    rec = serving.Recommender(str(tmp_path / "export"))
    # The recorded recall is the index's overlap with a numpy top-100 of the 300 users'
    # validation queries (the model's own user vectors).
    history = pipeline.eval_arrays(trained.data, "valid", max_seq_len=config.model.max_seq_len)
    queries, _ = trained.model.queries_and_table(trained.params, jnp.asarray(history["history"]))
    queries = np.asarray(queries)
    exact = np.argsort(-(queries @ rec.item_embeddings.T), axis=1, kind="stable")[:, :100]
    _, found = serving.search(rec.index, queries, 100, probe=2)
    recall = np.mean([len(np.intersect1d(e, f[f >= 0])) / 100 for e, f in zip(exact, found)])
    assert info["recall_at_100"] == pytest.approx(recall, abs=0.01)
    assert recall > (0.95 if kind == "hnsw" else 0.3)
    assert isinstance(faiss.downcast_index(rec.index), (faiss.IndexHNSW, faiss.IndexIVF))
    histories = _valid_histories(trained)[:20]
    for result in rec.recommend(histories, top_n=10):
        assert 0 < len(result["items"]) <= 10


def test_bad_serving_config_writes_nothing(run, tmp_path):
    _, trained = run
    config = synthetic.get_config("tiny")
    config.serving.index = "annoy"
    with pytest.raises(ConfigError, match="serving.index='annoy' is not one of flat, hnsw, ivf"):
        export.write_export(str(tmp_path / "export"), trained, config)
    config = synthetic.get_config("tiny")
    config.serving.ivf_probe = 0
    with pytest.raises(ConfigError, match="serving.ivf_probe=0 must be >= 1"):
        export.write_export(str(tmp_path / "export"), trained, config)
    assert os.listdir(tmp_path) == []


def test_index_kinds_and_recall():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(2000, 16)).astype(np.float32)
    queries = rng.normal(size=(50, 16)).astype(np.float32)
    exact = serving.build_index(embeddings)
    assert serving.recall_against_exact(exact, embeddings, queries, 100) == 1.0
    hnsw = serving.build_index(embeddings, "hnsw")
    assert serving.recall_against_exact(hnsw, embeddings, queries, 100, ef_search=400) > 0.9
    ivf = serving.build_index(embeddings, "ivf", ivf_lists=20)
    full = serving.recall_against_exact(ivf, embeddings, queries, 100, probe=20)
    assert full == 1.0  # every cell visited: exact
    assert serving.recall_against_exact(ivf, embeddings, queries, 100, probe=1) < full
    with pytest.raises(ConfigError, match="serving.index='annoy'"):
        serving.build_index(embeddings, "annoy")


def test_string_item_ids(run, recommender, tmp_path):
    _, trained = run
    raw = trained.data.item_raw_ids
    names = np.array([""] + [f"B{i:06d}" for i in raw[1:]])  # e.g. Amazon ASINs
    renamed = dataclasses.replace(
        trained, data=dataclasses.replace(trained.data, item_raw_ids=names)
    )
    manifest = export.write_export(str(tmp_path / "export"), renamed, synthetic.get_config("tiny"))
    assert manifest["item_id_type"] == "str"
    rec = serving.Recommender(str(tmp_path / "export"))
    assert rec.item_ids.dtype.kind == "U" and rec.id_type == "str"
    histories = _valid_histories(trained)[:5]
    as_names = [[f"B{i:06d}" for i in h] for h in histories]
    got = rec.recommend(as_names, top_n=8, explain=True, on_unknown="skip")
    expected = recommender.recommend(histories, top_n=8, explain=True)
    for g, e in zip(got, expected):
        assert g["items"] == [f"B{i:06d}" for i in e["items"]]
        assert g["scores"] == e["scores"] and g["unknown"] == []
        assert [i["items"] for i in g["explain"]["interests"]] == [
            [f"B{i:06d}" for i in interest["items"]] for interest in e["explain"]["interests"]
        ]
    assert rec.recommend([["nope", *as_names[0]]], on_unknown="skip")[0]["unknown"] == ["nope"]
    with pytest.raises(SineError, match="history 1: item id 5 is not of this export's id type"):
        rec.recommend([[5]])
    with pytest.raises(SineError, match="item id 'B000001' is not of this export's id type"):
        recommender.recommend([["B000001"]])
    assert serving.parse_history("B01, B02", "str") == ["B01", "B02"]
    path = tmp_path / "h.jsonl"
    path.write_text('["B01", "B02"]\n')
    assert serving.read_histories(str(path), "str") == [({}, ["B01", "B02"])]
    with pytest.raises(DataError, match="expected a list of integer item ids"):
        serving.read_histories(str(path))


def test_export_reads_checkpoints_of_an_older_train_state(run, tmp_path):
    _, trained = run
    # A train state without the fields that later versions added (e.g. nonfinite_steps).
    old_state = {"step": jnp.int32(7), "params": trained.params, "opt_state": ()}
    ckpt = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), keep=2)
    data_iter = iter(grain.MapDataset.range(4).to_iter_dataset())
    ckpt.save(7, old_state, data_iter, checkpointing.Progress(0.3, 7, 0))
    ckpt.wait()
    ckpt.close()
    restored = train.restore_best(synthetic.get_config("tiny"), str(tmp_path))
    assert restored.best_step == 7
    for name in ("item_embedding", "prototypes", "w3"):
        np.testing.assert_array_equal(restored.params[name][...], trained.params[name][...])
    manifest = export.write_export(str(tmp_path / "export"), restored, synthetic.get_config("tiny"))
    assert manifest["best_step"] == 7


def test_restore_best_without_checkpoints(tmp_path):
    with pytest.raises(SineError, match="no checkpoint to restore; train first"):
        train.restore_best(synthetic.get_config("tiny"), str(tmp_path))


def test_serving_fields_do_not_block_resuming():
    old = run_config.with_resolved_switches(synthetic.get_config("tiny").to_dict())
    del old["serving"]  # a run recorded (switches resolved) before the serving fields existed
    new = synthetic.get_config("tiny")
    new.serving.index = "hnsw"
    assert run_config.differing_fields(old, new.to_dict()) == []
    new.model.embed_dim = 8
    assert run_config.differing_fields(old, new.to_dict()) == ["model.embed_dim"]


@pytest.mark.parametrize("field, value", [("format_version", 2), ("format", "other-export")])
def test_an_export_of_another_format_version_is_refused(run, tmp_path, field, value):
    export_dir = tmp_path / "export"
    shutil.copytree(os.path.join(run[0], "export"), export_dir)
    manifest = json.loads((export_dir / serving.MANIFEST).read_text())
    manifest[field] = value
    (export_dir / serving.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(SineError, match=f"manifest.json: not a sine_jax-export version "
                                        f"{serving.FORMAT_VERSION} manifest"):
        serving.Recommender(str(export_dir))


@pytest.mark.parametrize("top_n", [0, -3])
def test_top_n_below_one_is_refused(recommender, top_n):
    history = recommender.item_ids[:5].tolist()
    with pytest.raises(SineError, match=f"top_n={top_n} must be >= 1"):
        recommender.recommend([history], top_n=top_n)


def test_missing_export_is_a_clear_error(tmp_path):
    with pytest.raises(SineError, match="no manifest.json; write one with --mode=export"):
        serving.Recommender(str(tmp_path))


def test_read_histories(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text('[1, 2, 3]\n\n{"user": "u7", "history": [4]}\n')
    assert serving.read_histories(str(path)) == [({}, [1, 2, 3]), ({"user": "u7"}, [4])]
    path.write_text('[1, 2]\n{"history": [1, "x"]}\n')
    with pytest.raises(DataError, match=r"h.jsonl:2: expected a list of integer item ids"):
        serving.read_histories(str(path))
    path.write_text("[1, 2\n")
    with pytest.raises(DataError, match=r"h.jsonl:1: not JSON"):
        serving.read_histories(str(path))
    assert serving.parse_history("3, 17,5") == [3, 17, 5]
    with pytest.raises(DataError, match="'x' is not an integer item id"):
        serving.parse_history("3,x")


def test_cli_recommend(run, recommender, tmp_path):
    workdir, trained = run
    histories = _valid_histories(trained)[:3]
    history = ",".join(map(str, histories[0]))
    proc = _cli(
        f"--workdir={workdir}", "--mode=recommend", f"--history={history}", "--top_n=7", "--explain"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = proc.stdout.splitlines()
    result = json.loads(line)
    expected = recommender.recommend(histories[:1], top_n=7, explain=True)[0]
    assert result == json.loads(json.dumps(expected))
    assert len(result["items"]) == 7 and len(result["explain"]["interests"]) == 4

    path = tmp_path / "histories.jsonl"
    unknown = int(recommender.item_ids.max()) + 1
    path.write_text(
        json.dumps({"user": 1, "history": histories[1]})
        + "\n"
        + json.dumps(histories[2] + [unknown])
        + "\n"
    )
    proc = _cli(
        f"--workdir={workdir}",
        "--mode=recommend",
        f"--histories={path}",
        "--skip_unknown",
        "--noexclude_history",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[0]["user"] == 1 and lines[0]["unknown"] == [] and len(lines[0]["items"]) == 10
    assert lines[1]["unknown"] == [unknown]
    assert (
        lines[1]["items"]
        == recommender.recommend(histories[2:3], exclude_history=False)[0]["items"]
    )

    proc = _cli(f"--workdir={workdir}", "--mode=recommend", f"--histories={path}")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: history 2: item id {unknown} is not among the {recommender.num_items} items "
        "of the export; --skip_unknown (on_unknown='skip') drops unknown ids"
    )
    proc = _cli(f"--workdir={tmp_path}", "--mode=recommend", "--history=1")
    assert proc.returncode == 2 and "no manifest.json" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- A tampered export is refused at load, naming the file -------------------------------------


def _edit_manifest(export_dir, change):
    path = export_dir / serving.MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _edit_array(export_dir, name, change):
    path = export_dir / f"{name}.npy"
    np.save(path, change(np.load(path)), allow_pickle=True)


def _index_of_the_first(export_dir, rows):
    table = np.load(export_dir / "item_embeddings.npy")
    index = faiss.IndexFlatIP(table.shape[1])
    index.add(table[:rows])
    faiss.write_index(index, str(export_dir / "index.faiss"))


def _repeat_first_id(ids):
    ids[1] = ids[0]
    return ids


def _nan_row(table):
    table[3, 0] = np.nan
    return table


TAMPERINGS = {
    "missing key": (lambda d: _edit_manifest(d, lambda m: m.pop("num_items")),
                    "manifest.json: num_items is None, not a positive integer"),
    "missing file entry": (lambda d: _edit_manifest(d, lambda m: m["files"].pop("index")),
                           "manifest.json: it has no file entry 'index' with a 'path'"),
    "path outside": (lambda d: _edit_manifest(
        d, lambda m: m["files"]["item_ids"].update(path="../../item_ids.npy")),
        "manifest.json: file 'item_ids' points outside the export"),
    "other width": (lambda d: _edit_array(d, "item_embeddings", lambda a: a[:, :8]),
                    "item_embeddings.npy: has shape [200, 8], the manifest's sizes give [200, 16]"),
    "other dtype": (lambda d: _edit_array(d, "item_embeddings", lambda a: a.astype(np.float64)),
                    "item_embeddings.npy: has dtype float64, expected float32"),
    "fewer items": (lambda d: _edit_array(d, "item_ids", lambda a: a[:-1]),
                    "item_ids.npy: has shape [199], the manifest's sizes give [200]"),
    "pickled ids": (lambda d: _edit_array(d, "item_ids", lambda a: a.astype(object)),
                    "item_ids.npy: unreadable (Object arrays cannot be loaded"),
    "repeated id": (lambda d: _edit_array(d, "item_ids", _repeat_first_id),
                    "item_ids.npy: repeats an item id"),
    "not finite": (lambda d: _edit_array(d, "item_embeddings", _nan_row),
                   "item_embeddings.npy: holds values that are not finite"),
    "short index": (lambda d: _index_of_the_first(d, 150),
                    "index.faiss: holds 150 vectors of dimension 16, expected the 200 items"),
    "garbage index": (lambda d: (d / "index.faiss").write_bytes(b"garbage"),
                      "index.faiss: not a faiss index"),
    "garbage encoder": (lambda d: (d / "encoder.jax").write_bytes(b"garbage"),
                        "encoder.jax: not a serialised jax.export function"),
    "other window": (lambda d: _edit_manifest(d, lambda m: m.update(max_seq_len=10)),
                     "encoder.jax: takes [((200, 16), 'float32'), (('b', 20), 'int32')]"),
}


@pytest.mark.parametrize("tampering", TAMPERINGS)
def test_a_tampered_export_is_refused_at_load_naming_the_file(run, tmp_path, tampering):
    """Before, a missing key or file was a traceback and an index with fewer vectors than
    the manifest's items returned wrong items with exit code 0."""
    tamper, message = TAMPERINGS[tampering]
    export_dir = tmp_path / "export"
    shutil.copytree(os.path.join(run[0], "export"), export_dir)
    serving.Recommender(str(export_dir))  # the copy loads
    tamper(export_dir)
    with pytest.raises(serving.ExportError) as err:
        serving.Recommender(str(export_dir))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).endswith("write the export again with --mode=export")


def test_cli_recommend_from_a_tampered_export_is_one_line(run, tmp_path):
    shutil.copytree(os.path.join(run[0], "export"), tmp_path / "export")
    _index_of_the_first(tmp_path / "export", 150)
    proc = _cli(f"--workdir={tmp_path}", "--mode=recommend", "--history=1,2")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "holds 150 vectors" in proc.stderr


def test_ids_beyond_int64_are_unknown_not_an_overflow(recommender):
    known = recommender.item_ids[:3].tolist()
    huge = 2**63
    with pytest.raises(serving.UnknownItemError, match=f"history 1: item id {huge} is not"):
        recommender.recommend([[huge, *known]])
    (skipped,) = recommender.recommend([[huge, *known, -(2**70)]], on_unknown="skip")
    assert skipped["unknown"] == [huge, -(2**70)]
    assert skipped["items"] == recommender.recommend([known])[0]["items"]


def test_hostile_history_files_are_one_line_errors(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_bytes(b"[1, 2]\n[3, \"\xff\xfe\"]\n")
    with pytest.raises(DataError, match=r"h.jsonl:2: not UTF-8 text \(byte 6\)"):
        serving.read_histories(str(path))
    path.write_text("[1]\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(DataError, match="h.jsonl:2: JSON nested too deeply"):
        serving.read_histories(str(path))
    path.write_text("\n\n")
    with pytest.raises(DataError, match=r"h.jsonl: no histories \(the file is empty\)"):
        serving.read_histories(str(path))


def test_ivf_cells_beyond_the_catalogue_are_a_config_error(run, tmp_path):
    _, trained = run
    config = synthetic.get_config("tiny")
    config.serving.index = "ivf"
    config.serving.ivf_lists = 500
    with pytest.raises(ConfigError, match="serving.ivf_lists=500 must be at most the 200 items"):
        export.write_export(str(tmp_path / "export"), trained, config)
    assert os.listdir(tmp_path) == []
