"""SINE's switch ablations (sine_jax.experiments.ablations, launch/ablations.py: one override
per variant, the gains and the decision rule on fake results), sweep.job_slots (several CPU
jobs at a time) and launch/learning_curve.py."""

import json
import os
import sys

import pytest

from launch import ablations as ablations_cli
from launch import learning_curve
from sine_jax.experiments import ablations, sweep
from sine_jax import sine_options as model_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "synthetic.py")


def plan(tmp_path, variants=None, seeds="0,1", sets=()):
    return ablations.plan(CONFIG, str(tmp_path), seeds=seeds, variants=variants, sets=list(sets))


def parse(text: str):
    """A --config.FIELD=VALUE text as the config's type: bool, int, float or str."""
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def test_every_model_switch_has_a_variant_for_each_non_paper_value():
    paper = model_lib.PRESETS["paper"]
    changed = {}
    for name, (overrides, _) in ablations.VARIANTS.items():
        model_fields = {f.removeprefix("model."): parse(v) for f, v in overrides.items()
                        if f.startswith("model.") and f != "model.preset"}
        if model_fields:  # a switch variant: one field, a valid value the paper does not use
            (switch, value), = model_fields.items()
            options = model_lib.resolve_switches({"preset": "paper", **model_fields})
            differs = [f for f in model_lib.SWITCHES if getattr(options, f) != getattr(paper, f)]
            assert differs == [switch], name
            changed.setdefault(switch, set()).add(value)
    assert set(changed) == set(model_lib.SWITCHES)
    assert changed["attention_hidden"] == {model_lib.PRESETS["official"].attention_hidden}
    assert changed["aggregation_attention"] == {"own", "own_plus_items"}
    assert ablations.VARIANTS["cov_weight-0"][0] == {"model.preset": "paper",
                                                     "loss.cov_weight": "0.0"}
    assert ablations.VARIANTS["official"][0] == {"model.preset": "official"}
    # every other variant starts from the literal paper, not the config's default preset
    assert all(overrides["model.preset"] == "paper"
               for name, (overrides, _) in ablations.VARIANTS.items() if name != "official")


def test_plan_adds_exactly_one_override_per_variant_and_the_seed(tmp_path):
    jobs = plan(tmp_path, variants="official,paper,assignment-cosine", seeds="0,3")
    assert [job.name for job in jobs] == [
        "paper_seed-0", "paper_seed-3", "assignment-cosine_seed-0", "assignment-cosine_seed-3",
        "official_seed-0", "official_seed-3"]
    by_name = {job.name: job for job in jobs}
    base = set(by_name["paper_seed-0"].command)
    assert "--config.model.preset=paper" in base  # not the config's default preset
    cosine = set(by_name["assignment-cosine_seed-3"].command)
    assert cosine - base == {"--config.model.assignment=cosine", "--config.train.seed=3",
                             f"--workdir={tmp_path}/assignment-cosine_seed-3"}
    assert f"--config.data.cache_dir={tmp_path}/cache" in base  # shared preprocessing
    assert by_name["official_seed-0"].overrides == {"variant": "official", "train.seed": "0"}


@pytest.mark.parametrize("kwargs, message", [
    (dict(variants="paper,nope"), "--variants='paper,nope'"),
    (dict(sets=["model.assignment=cosine"]), "a variant changes model.assignment"),
    (dict(sets=["train.seed=1"]), "give the seeds with --seeds"),
    (dict(sets=["model.nope=1"]), "unknown config field model.nope"),
    (dict(seeds="0,0"), "--seeds='0,0'"),
])
def test_bad_arguments_are_refused_before_anything_runs(tmp_path, kwargs, message):
    with pytest.raises(sweep.SweepError, match=message.replace("(", r"\(")):
        plan(tmp_path / "abl", **kwargs)
    assert not os.path.exists(tmp_path / "abl")


def fake_results(variant: str, seed: int) -> dict:
    gains = {"paper": 0.0, "assignment-cosine": 0.008, "official": -0.02}
    hr10 = 0.20 + gains[variant] + 0.002 * seed
    metrics = {"HR@10": hr10, "NDCG@10": hr10 / 2, "HR@50": hr10 * 2, "NDCG@50": hr10,
               "HR@100": hr10 * 3, "NDCG@100": hr10}
    return {"test": metrics, "valid": {k: v + 0.01 for k, v in metrics.items()},
            "best_step": 10, "wall_seconds": 100.0}


def test_collect_only_writes_gains_and_the_rule_verdict(tmp_path, capsys):
    jobs = plan(tmp_path, variants="paper,assignment-cosine,official", seeds="0,1")
    for job in jobs:
        if job.name == "official_seed-1":
            continue  # never ran
        os.makedirs(job.workdir)
        with open(sweep.results_path(job), "w") as f:
            json.dump(fake_results(job.overrides["variant"], int(job.overrides["train.seed"])), f)
    code = ablations_cli.main([f"--config={CONFIG}", f"--workdir={tmp_path}", "--seeds=0,1",
                           "--variants=paper,assignment-cosine,official", "--collect_only"])
    assert code == 0
    assert "5/6 runs finished" in capsys.readouterr().out
    rows = {row["variant"]: row for row in
            json.load(open(tmp_path / "ablations.json"))["rows"]}
    assert rows["paper"]["valid_gain"] is None
    assert rows["assignment-cosine"]["valid_gain"] == pytest.approx(0.8)
    assert rows["official"]["valid_gain"] == pytest.approx(-2.0)  # paired: seed 0 only
    assert rows["official"]["gain_seeds"] == [0] and rows["assignment-cosine"]["gain_seeds"] == [0, 1]
    assert rows["official"]["done"] == 1
    text = open(tmp_path / "ablations.md").read()
    cosine_line = next(line for line in text.splitlines()
                       if line.startswith("| assignment-cosine |"))
    assert "| +0.80 (2) | not yet: 2 of 3 seeds |" in cosine_line
    assert "20.90 ± 0.14" in cosine_line  # test HR@10 of seeds 0 and 1, percent
    official_line = next(line for line in text.splitlines() if line.startswith("| official |"))
    assert "| -2.00 (1) | no | 1/2 |" in official_line
    assert "- official, seed 1: missing" in text
    assert "`model.assignment=cosine`" in text


def test_the_rule_needs_the_gain_on_three_seeds():
    assert ablations.verdict(None, 0) == ""
    assert ablations.verdict(0.49, 3) == "no"
    assert ablations.verdict(0.5, 3) == "passes here"
    assert ablations.verdict(2.0, 1) == "not yet: 1 of 3 seeds"


def test_ablations_refuse_a_baseline(tmp_path, capsys):
    code = ablations_cli.main([f"--config={CONFIG}", f"--workdir={tmp_path}", "--seeds=0",
                           "--set=model.name=gru4rec", "--collect_only"])
    assert code == 2
    assert "the switches are SINE's" in capsys.readouterr().err


def test_job_slots_cpu_jobs_and_devices(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert sweep.job_slots(None, 1) == [None]
    assert sweep.job_slots(None, 3) == [None, None, None]
    assert sweep.job_slots("0,2", 1) == ["0", "2"]
    with pytest.raises(sweep.SweepError, match="--cpu_jobs=0"):
        sweep.job_slots(None, 0)


def test_cpu_jobs_run_at_the_same_time(tmp_path):
    """Two jobs that each wait for the other's marker file finish only when run together."""
    script = ("import os, sys, time\n"
              "mine, other = sys.argv[1], sys.argv[2]\n"
              "open(mine, 'w').close()\n"
              "deadline = time.time() + 60\n"
              "while not os.path.exists(other) and time.time() < deadline: time.sleep(0.05)\n"
              "sys.exit(0 if os.path.exists(other) else 1)\n")
    markers = [str(tmp_path / "a.started"), str(tmp_path / "b.started")]
    jobs = [sweep.Job(name=name, workdir=str(tmp_path / name), overrides={},
                      command=(sys.executable, "-c", script, mine, other))
            for name, mine, other in (("a", *markers), ("b", *reversed(markers)))]
    entries = sweep.run_sweep(jobs, [None, None], str(tmp_path))
    assert [entry["status"] for entry in entries] == ["done", "done"]


# ---------------------------------------------------------------------------------------------
# launch/learning_curve.py


def write_metrics(workdir, lines):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.write("\n".join(json.dumps(line) for line in lines) + "\n")


def test_learning_curve_keeps_the_last_line_of_a_step_and_writes_the_png(tmp_path, capsys):
    run = tmp_path / "run"
    write_metrics(run, [{"step": 100, "train/loss": 5.0},
                        {"step": 1000, "valid/HR@10": 0.10},
                        {"step": 2000, "valid/HR@10": 0.15},
                        {"step": 2000, "valid/HR@10": 0.17},  # the resumed run's line wins
                        {"step": 3000, "valid/HR@10": 0.16}])
    assert learning_curve.read_curve(str(run), "valid/HR@10") == [
        (1000, 0.10), (2000, 0.17), (3000, 0.16)]
    out = tmp_path / "figs" / "curve.png"
    assert learning_curve.main([f"--run={run}:paper", f"--out={out}"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 2000 | 17.00 |" in capsys.readouterr().out


@pytest.mark.parametrize("lines, extra, message", [
    (None, [], "metrics.jsonl: no such file"),
    ([{"step": 1, "train/loss": 1.0}], [], "no 'valid/HR@10' values"),
    (["oops"], [], "metrics.jsonl:1: not a metrics line"),
    ([{"step": 1, "valid/HR@10": 0.1}], ["--run=RUN:x", "--run=RUN:x"], "share a label"),
])
def test_learning_curve_bad_runs_are_one_line_errors(tmp_path, capsys, lines, extra, message):
    run = tmp_path / "run"
    if lines is not None:
        write_metrics(run, lines)
    argv = [a.replace("RUN", str(run)) for a in extra] or [f"--run={run}"]
    assert learning_curve.main([*argv, f"--out={tmp_path / 'c.png'}"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()
