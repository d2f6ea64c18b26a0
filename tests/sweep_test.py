"""sine_jax.experiments.sweep and launch/sweep.py: grid expansion, names, argument checks,
skipping, one real 2-job sweep."""

import json
import os
import re
import subprocess
import sys

import pytest

from launch import sweep as sweep_cli
from sine_jax import run_config
from sine_jax.experiments import sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(REPO, "launch", "sweep.py")
CONFIG = os.path.join(REPO, "configs", "synthetic.py")


def _plan(workdir="runs/s", **kwargs):
    return sweep.plan(CONFIG, workdir, **kwargs)


def test_grid_expands_to_the_cartesian_product_with_seeds_last():
    axes = sweep.sweep_axes(["model.num_interests=2,4", "model.num_prototypes=10,50,100"], "0,1")
    points = sweep.expand(axes)
    assert len(points) == 2 * 3 * 2
    assert points[0] == {"model.num_interests": "2", "model.num_prototypes": "10",
                         "train.seed": "0"}
    assert points[-1] == {"model.num_interests": "4", "model.num_prototypes": "100",
                          "train.seed": "1"}


def test_job_names_are_readable_unique_and_stable():
    jobs = _plan(grid=["model.num_interests=2,4", "model.num_prototypes=10,50"], seeds="0,1",
                 sets=["train.num_epochs=1"])
    names = [job.name for job in jobs]
    assert names[0] == "num_interests-2_num_prototypes-10_seed-0"
    assert len(set(names)) == len(names) == 8
    reordered = _plan(grid=["model.num_prototypes=50,10", "model.num_interests=4"], seeds="1")
    assert reordered[0].name == "num_prototypes-50_num_interests-4_seed-1"  # its own point only
    job = jobs[0]
    assert job.workdir == os.path.join("runs/s", job.name)
    assert job.command[-5:] == ("--config.train.num_epochs=1", "--config.data.cache_dir=runs/s/cache",
                                "--config.model.num_interests=2",
                                "--config.model.num_prototypes=10", "--config.train.seed=0")


def test_names_of_awkward_fields_and_values():
    labels = sweep.short_labels(["train.seed", "data.synthetic.seed", "model.num_interests"])
    assert labels == {"train.seed": "train.seed", "data.synthetic.seed": "synthetic.seed",
                      "model.num_interests": "num_interests"}
    assert sweep.split_values("(10,50), (20,50)") == ["(10,50)", "(20,50)"]
    assert sweep.safe_value("(20, 50)") == "20,_50"
    assert sweep.safe_value("../data/ratings.dat") == ".._data_ratings.dat"
    with pytest.raises(sweep.SweepError, match="share the job name path-a_b"):
        sweep.make_jobs("c.py", "w", [("data.path", ["a/b", "a b"])], {})


@pytest.mark.parametrize("argv, message", [
    (["--grid=model.num_interests"], "--grid='model.num_interests': expected FIELD=V1,V2"),
    (["--grid=model.num_interests=2,,4"], "empty value"),
    (["--grid=model.num_interests=2,2"], "a value is repeated"),
    (["--grid=model.num_interest=2,4"], "did you mean model.num_interests?"),
    (["--seeds=0", "--set=train.sed=1"], "unknown config field train.sed"),
    (["--grid=model=2,4"], "model is a group of fields"),
    (["--grid=train.seed=1,2", "--seeds=3"], "train.seed is given more than once"),
    (["--seeds=0,x"], "--seeds='0,x'"),
    ([], "nothing to sweep"),
])
def test_bad_arguments_are_one_line_errors_before_anything_runs(tmp_path, capsys, argv, message):
    code = sweep_cli.main([f"--config={CONFIG}", f"--workdir={tmp_path}/s", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not os.path.exists(tmp_path / "s")


def test_done_jobs_are_skipped_and_summarised(tmp_path):
    jobs = _plan(str(tmp_path), seeds="0,1")
    os.makedirs(jobs[0].workdir)
    results = {"test": {"HR@10": 0.5}, "valid": {"HR@10": 0.4}, "best_step": 7,
               "wall_seconds": 12.0, "config": {}}
    with open(os.path.join(jobs[0].workdir, "results.json"), "w") as f:
        json.dump(results, f)
    assert [sweep.is_done(job) for job in jobs] == [True, False]
    assert sweep.job_entry(jobs[0], "skipped") == {
        "name": "seed-0", "workdir": jobs[0].workdir, "overrides": {"train.seed": "0"},
        "status": "skipped", "test": {"HR@10": 0.5}, "valid": {"HR@10": 0.4}, "best_step": 7,
        "wall_seconds": 12.0}


def test_a_finished_job_with_another_config_stops_the_sweep_naming_the_fields(tmp_path):
    plan = dict(workdir=str(tmp_path), seeds="0", sets=["model.num_prototypes=12",
                                                         "eval.ks=(10,20)"])
    [job] = _plan(**plan)
    recorded = run_config.with_resolved_switches(json.loads(sweep.config_from_args(CONFIG, {
        "model.num_prototypes": "12", "eval.ks": "(10,20)", "train.seed": "0",
        "data.cache_dir": os.path.join(str(tmp_path), "cache"),
        "train.num_epochs": "7"}).to_json()))  # a run-length field: never stale
    os.makedirs(job.workdir)
    with open(sweep.results_path(job), "w") as f:
        json.dump({"config": recorded}, f)
    assert sweep.stale_fields(job) == []
    assert _plan(**plan) == [job]  # the same command: skipped, not refused

    recorded["model"]["num_prototypes"] = 50  # as if run before the preset or the --set changed
    recorded["model"]["assignment"] = "layernorm"  # the default preset's is cosine
    with open(sweep.results_path(job), "w") as f:
        json.dump({"config": recorded}, f)
    assert sweep.stale_fields(job) == ["model.assignment: 'layernorm' -> 'cosine'",
                                       "model.num_prototypes: 50 -> 12"]
    with pytest.raises(sweep.SweepError, match=r"seed-0 finished with another config \(model"):
        _plan(**plan)


def test_a_failing_job_is_reported_with_its_exit_code_and_last_log_line(tmp_path):
    command = (sys.executable, "-c", "print('step 1'); print('error: bad data'); exit(3)")
    job = sweep.Job(name="j", workdir=str(tmp_path / "j"), overrides={}, command=command)
    entries = sweep.run_sweep([job], [None], str(tmp_path))
    assert entries == [{"name": "j", "workdir": job.workdir, "overrides": {}, "status": "failed",
                        "returncode": 3, "error": "error: bad data"}]
    with open(tmp_path / "sweep.json") as f:
        assert json.load(f)["jobs"] == entries


def test_jobs_run_at_once_one_per_device(tmp_path):
    # Each job waits for the other's marker file: both finish only if they overlap.
    script = ("import os, sys, time\n"
              "open(sys.argv[1], 'w').close()\n"
              "deadline = time.time() + 30\n"
              "while not os.path.exists(sys.argv[2]) and time.time() < deadline:\n"
              "    time.sleep(0.05)\n"
              "print(os.environ['CUDA_VISIBLE_DEVICES'], os.path.exists(sys.argv[2]))")
    a, b = str(tmp_path / "a.marker"), str(tmp_path / "b.marker")
    jobs = [sweep.Job(name=n, workdir=str(tmp_path / n), overrides={},
                      command=(sys.executable, "-c", script, mine, other))
            for n, mine, other in (("a", a, b), ("b", b, a))]
    entries = sweep.run_sweep(jobs, ["0", "1"], str(tmp_path))
    assert [entry["status"] for entry in entries] == ["done", "done"]
    lines = {sweep.last_line(os.path.join(job.workdir, "log.txt")) for job in jobs}
    assert lines == {"0 True", "1 True"}


def test_visible_gpus():
    smi = "GPU 0: NVIDIA H200 (UUID: GPU-a)\nGPU 1: NVIDIA H200 (UUID: GPU-b)\n"
    assert sweep.visible_gpus({}, smi) == ["0", "1"]
    assert sweep.visible_gpus({}, "") == []
    assert sweep.visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}, smi) == ["2", "3"]
    assert sweep.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, smi) == []
    assert sweep.visible_gpus({"JAX_PLATFORMS": "cpu"}, smi) == []


def test_two_job_sweep_end_to_end_then_skipped_when_rerun(tmp_path):
    command = [sys.executable, SWEEP, "--config=configs/synthetic.py:tiny",
               f"--workdir={tmp_path}", "--seeds=0,1", "--set=train.num_epochs=1"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")

    first = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env,
                           timeout=300, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    events = re.findall(r"^\[[0-9:]+\] \d/2 (start|done) (seed-\d)", first.stdout, re.M)
    assert events == [("start", "seed-0"), ("done", "seed-0"), ("start", "seed-1"),
                      ("done", "seed-1")], first.stdout  # one CPU slot: one job at a time
    with open(tmp_path / "sweep.json") as f:
        entries = json.load(f)["jobs"]
    assert [(e["name"], e["status"]) for e in entries] == [("seed-0", "done"), ("seed-1", "done")]
    for entry in entries:
        with open(tmp_path / entry["name"] / "results.json") as f:
            assert entry["test"] == json.load(f)["test"]
        assert entry["valid"]["HR@10"] > 0 and entry["wall_seconds"] > 0
        assert os.path.isfile(tmp_path / entry["name"] / "log.txt")
    assert os.listdir(tmp_path / "cache")  # one preprocessed dataset for both jobs

    second = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env,
                            timeout=60, check=False)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "skipped seed-0" in second.stdout and "skipped seed-1" in second.stdout
    assert "start" not in second.stdout
    with open(tmp_path / "sweep.json") as f:
        rerun = json.load(f)["jobs"]
    assert [e["status"] for e in rerun] == ["skipped", "skipped"]
    assert [e["test"] for e in rerun] == [e["test"] for e in entries]

    changed = subprocess.run([*command, "--set=model.num_interests=2"], capture_output=True,
                             text=True, cwd=REPO, env=env, timeout=60, check=False)
    assert changed.returncode == 2, changed.stdout + changed.stderr
    assert "model.num_interests: 4 -> 2" in changed.stderr and "start" not in changed.stdout
