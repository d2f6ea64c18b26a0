"""End to end: training learns, sharding agrees, interrupt and resume reproduce, results.json."""

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import synthetic
from sine_jax import checkpointing, config_checks, step, train
from sine_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def synthetic_results(tmp_path_factory):
    """The README's first command, in process: configs/synthetic.py on one device."""
    workdir = str(tmp_path_factory.mktemp("synthetic"))
    config = synthetic.get_config()
    config.mesh.data = 1
    return train.train_and_evaluate(config, workdir), workdir


def _first_order_test_hit_rate(data, k=10):
    """Test HR@k of a first-order transition count in numpy: items ranked by how often they
    followed the user's last input item in the training parts (each sequence but its last two
    items), input items not ranked, ties counted against the target."""
    sequences = [data.items[a:b] for a, b in zip(data.offsets[:-1], data.offsets[1:])]
    transitions = np.zeros((data.num_items + 1, data.num_items + 1))
    for sequence in sequences:
        np.add.at(transitions, (sequence[:-3], sequence[1:-2]), 1)
    hits = 0
    for sequence in sequences:
        history, target = sequence[:-1], sequence[-1]
        scores = transitions[history[-1]].copy()
        scores[0] = -np.inf
        scores[history] = -np.inf
        ahead = np.sum(scores >= scores[target]) - 1
        hits += ahead < k
    return hits / len(sequences)


def test_synthetic_run_learns_and_beats_popularity(synthetic_results):
    results, workdir = synthetic_results
    config = synthetic.get_config()
    config.model.name = "pop"
    pop = train.train_and_evaluate(config, os.path.join(workdir, "pop"))["test"]
    assert 0 < pop["HR@10"] <= 0.05
    assert results["test"]["HR@10"] >= 2 * pop["HR@10"]
    # An independent floor: SINE beats counting which item followed the last one (0.67).
    config.model.name = "sine"
    data = train.build_run(config, os.path.join(workdir, "pop")).data
    assert results["test"]["HR@10"] > _first_order_test_hit_rate(data)
    # Regression pin: test HR@10 0.724 and NDCG@10 0.682 on one device with the default
    # preset (cosine assignment and scale, 2 encoder blocks, dropout 0.2). A change that moves
    # either by more than 3 points fails here: a loss of accuracy, or a gain too large to be
    # anything but a leak (say, a target left in the history) until explained.
    assert results["test"]["HR@10"] == pytest.approx(0.724, abs=0.03)
    assert results["test"]["NDCG@10"] == pytest.approx(0.682, abs=0.03)


def test_prototypes_cluster_the_planted_categories(synthetic_results):
    """Table 5's measure on data whose categories are known: each item's nearest prototype
    agrees with its planted category far beyond chance (NMI 0.41 vs 0.07 at 23c30c5)."""
    from launch import prototypes

    _, workdir = synthetic_results
    assert prototypes.main(["--config=configs/synthetic.py", f"--workdir={workdir}"]) == 0
    with open(os.path.join(workdir, "prototypes.json")) as f:
        nmi = json.load(f)["nmi"]
    assert nmi["items_scored"] >= 900
    assert nmi["nmi"] > 0.25 and nmi["nmi"] > 3 * nmi["chance_nmi"]


def test_results_json_schema(synthetic_results):
    results, workdir = synthetic_results
    with open(os.path.join(workdir, "results.json")) as f:
        on_disk = json.load(f)
    assert on_disk["test"] == pytest.approx(results["test"])
    for split in ("test", "valid"):
        assert set(on_disk[split]) == {
            f"{m}@{k}" for m in ("HR", "NDCG") for k in (10, 50, 100)
        }
        assert all(0.0 <= v <= 1.0 for v in on_disk[split].values())
    assert on_disk["best_step"] > 0
    assert on_disk["config"]["model"]["name"] == "sine"
    assert on_disk["data"]["users"] == 2000 and on_disk["data"]["items"] <= 1000
    assert on_disk["environment"]["jax"] == jax.__version__
    assert on_disk["seed"] == 0 and on_disk["wall_seconds"] > 0
    # Metrics are TensorBoard-readable and in metrics.jsonl.
    assert any(f.startswith("events.out") for f in os.listdir(os.path.join(workdir, "tensorboard")))
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    assert any("train/examples_per_sec" in line for line in lines)
    assert any("valid/HR@10" in line for line in lines)
    # How many interests the test users have, also at each validation.
    interests = on_disk["interests"]
    assert set(interests) == {"effective_k", "history_interests", "prototypes_used"}
    k, num_prototypes = on_disk["config"]["model"]["num_interests"], 20
    assert 1.0 <= interests["effective_k"] <= k and 1.0 <= interests["history_interests"] <= k
    assert 0.0 < interests["prototypes_used"] <= 1.0
    assert (interests["prototypes_used"] * num_prototypes).is_integer()
    assert any("valid/interests/effective_k" in line for line in lines)
    # Periodic checkpoints exist, and the best one was kept.
    steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
    assert on_disk["best_step"] in steps


def test_interrupt_and_resume_reproduces_uninterrupted_run(tmp_path, monkeypatch):
    config = synthetic.get_config("tiny")
    reference = train.train_and_evaluate(config, str(tmp_path / "ref"))

    real_make_step_fn = step.make_step_fn

    class Interrupted(Exception):
        pass

    def dying_step_fn(*args, **kwargs):
        step_fn, calls = real_make_step_fn(*args, **kwargs), [0]

        def step(state, batch):
            calls[0] += 1
            if calls[0] > 60:  # dies in step 61; the last checkpoint is step 50
                raise Interrupted
            return step_fn(state, batch)

        return step

    workdir = str(tmp_path / "resumed")
    monkeypatch.setattr(step, "make_step_fn", dying_step_fn)
    with pytest.raises(Interrupted):
        train.train_and_evaluate(config, workdir)
    monkeypatch.setattr(step, "make_step_fn", real_make_step_fn)
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    assert checkpointing.Checkpointer(
        os.path.join(workdir, "checkpoints"), keep=2
    ).latest_step() == 50
    resumed = train.train_and_evaluate(config, workdir)
    assert resumed["best_step"] == reference["best_step"]
    assert resumed["test"] == reference["test"]
    assert resumed["valid"] == reference["valid"]


def test_short_run_still_validates_and_tests(tmp_path):
    config = synthetic.get_config("tiny")
    config.train.num_epochs = 1
    config.eval.every_steps = 10_000  # never reached: the final validation must still run
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["best_step"] > 0
    assert 0.0 <= results["test"]["HR@10"] <= 1.0


def test_bad_configs_are_rejected_before_compiling():
    config = synthetic.get_config("tiny")
    config.train.batch_size = 60
    config.mesh.data = 8
    with pytest.raises(ConfigError, match="train.batch_size=60"):
        config_checks.check_config(config, num_devices=8)
    config = synthetic.get_config("tiny")
    config.mesh.data = 3
    with pytest.raises(ConfigError, match="mesh.data=3"):
        config_checks.check_config(config, num_devices=8)
    config = synthetic.get_config("tiny")
    config.loss.name = "bpr"
    with pytest.raises(ConfigError, match="loss.name='bpr'.*sampled_softmax"):
        config_checks.check_config(config, num_devices=8)


def test_k_larger_than_l_is_a_config_error(tmp_path):
    config = synthetic.get_config("tiny")
    config.model.num_interests = 12
    with pytest.raises(ConfigError, match="num_interests"):
        train.train_and_evaluate(config, str(tmp_path))


def _cli(*args, cwd=REPO):
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
    return subprocess.run(
        [sys.executable, "-m", "sine_jax.main", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
    )


def test_cli_reports_a_missing_data_file_in_one_line(tmp_path):
    proc = _cli(
        "--config=configs/movielens.py",
        f"--workdir={tmp_path}",
        f"--config.data.path={tmp_path}/nope/ratings.dat",
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "nope/ratings.dat" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("spec, message", [
    ("configs/nope.py", "error: --config=configs/nope.py: no such file configs/nope.py"),
    ("configs/movielens.py:best", "error: --config=configs/movielens.py:best: ValueError: "
                                  "preset 'best': expected one of paper, tuned"),
])
def test_cli_reports_a_bad_config_file_in_one_line(tmp_path, spec, message):
    proc = _cli(f"--config={spec}", f"--workdir={tmp_path}")
    assert proc.returncode == 2
    assert proc.stderr.strip() == message
    assert not os.listdir(tmp_path)


def test_cli_eval_mode_reproduces_training_results(tmp_path):
    config_args = [
        "--config=configs/synthetic.py",
        f"--workdir={tmp_path}",
        "--config.data.synthetic.num_users=300",
        "--config.data.synthetic.num_items=200",
        "--config.data.synthetic.num_categories=10",
        "--config.model.embed_dim=16",
        "--config.model.num_prototypes=10",
        "--config.train.num_epochs=1",
    ]
    trained = _cli(*config_args)
    assert trained.returncode == 0, trained.stderr[-2000:]
    # What the user reads: compiling, progress with time left, the table and results.json.
    log = trained.stderr
    assert log.index("compiling the train step") < log.index("compiled; the first step took")
    assert re.search(r"step 50/\d+ \(epoch [\d.]+ of 1\): loss [\d.]+ .*; [\d,]+ examples/s, "
                     r"\d+s elapsed, at most \d+s (left|of training left \+ 1 validation)$",
                     log, re.M), log[-3000:]
    table, results_line = log.strip().splitlines()[-8], log.strip().splitlines()[-1]
    assert table.split() == ["metric", "valid", "test"]
    assert results_line.startswith(f"results: {tmp_path}/results.json (best step ")
    evaluated = _cli(*config_args, "--mode=eval")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert json.loads(trained.stdout.splitlines()[-1]) == json.loads(
        evaluated.stdout.splitlines()[-1]
    )
    # Without --config: the workdir's recorded config; --config.FIELD=VALUE overrides it.
    recorded = _cli(f"--workdir={tmp_path}", "--mode=eval")
    assert recorded.returncode == 0, recorded.stderr[-2000:]
    assert recorded.stdout.splitlines()[-1] == evaluated.stdout.splitlines()[-1]
    ranked = _cli(f"--workdir={tmp_path}", "--mode=eval", "--config.eval.mask_history=False")
    assert ranked.returncode == 0, ranked.stderr[-2000:]
    assert (json.loads(ranked.stdout.splitlines()[-1])["test"]["HR@10"]
            < json.loads(evaluated.stdout.splitlines()[-1])["test"]["HR@10"])


def test_held_out_users_protocol_end_to_end(tmp_path):
    config = synthetic.get_config("tiny")
    config.data.split = "held_out_users"
    config.eval.ks = (20, 50)
    config.eval.metric = "Recall@20"
    results = train.train_and_evaluate(config, str(tmp_path))
    expected = {f"{m}@{k}" for m in ("Recall", "NDCG", "HitRate") for k in (20, 50)}
    assert set(results["test"]) == expected == set(results["valid"])
    assert all(0.0 <= v <= 1.0 for v in results["test"].values())
    assert results["test"]["HitRate@50"] >= results["test"]["Recall@50"] > 0


def test_validation_test_gap_report(synthetic_results):
    """The split-gap report reproduces the run's metrics and splits the test users in two."""
    from sine_jax import analysis

    results, workdir = synthetic_results
    config = synthetic.get_config()
    config.mesh.data = 1
    report = analysis.validation_test_gap(config, workdir)
    assert report["valid"] == pytest.approx(results["valid"])
    assert report["test"] == pytest.approx(results["test"])
    users, rare = results["data"]["users"], report["rare_users"]
    assert 0.2 * users <= rare < users
    mixed = (rare * report["test_rare_last"]["HR@10"]
             + (users - rare) * report["test_common_last"]["HR@10"]) / users
    assert mixed == pytest.approx(results["test"]["HR@10"])
    # The synthetic next item follows the newest item: without it the test is harder.
    assert report["test_without_last"]["HR@10"] < results["test"]["HR@10"] - 0.1
