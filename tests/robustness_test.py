"""Failures end in a clean resume or a one-line error: kill -9, damaged checkpoints, NaN, disk."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--config=configs/synthetic.py:tiny",
    "--config.train.log_every_steps=5",
    "--config.checkpoint.every_steps=10",
]


def _env():
    return dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")


def _run(workdir, *extra, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "sine_jax.main", *TINY, f"--workdir={workdir}", *extra],
        capture_output=True, text=True, cwd=REPO, env=_env(), timeout=timeout,
    )


def _last_logged_step(workdir):
    try:
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return -1
    steps = [json.loads(line)["step"] for line in lines if line.endswith("}")]
    return max(steps, default=-1)


def _kill_at_step(workdir, step, timeout=300):
    """Starts the CLI and SIGKILLs it once it has logged `step` (or when it ends)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sine_jax.main", *TINY, f"--workdir={workdir}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, env=_env(),
    )
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if _last_logged_step(workdir) >= step:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    return proc.returncode


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference")
    proc = _run(workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((workdir / "results.json").read_text())


def test_kill_9_at_random_steps_then_rerun_gives_the_uninterrupted_results(reference, tmp_path):
    rng = random.Random(0)
    steps = sorted(rng.sample(range(5, 80), 3))  # kills before, during and after evaluations
    for step in steps:
        _kill_at_step(tmp_path, step)
    proc = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = json.loads((tmp_path / "results.json").read_text())
    assert resumed["best_step"] == reference["best_step"]
    assert resumed["test"] == reference["test"]
    assert resumed["valid"] == reference["valid"]


def test_a_damaged_latest_checkpoint_is_skipped_with_a_one_line_warning(reference, tmp_path):
    assert _kill_at_step(tmp_path, 45) == -signal.SIGKILL
    steps = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
    for path in (tmp_path / "checkpoints" / str(steps[-1]) / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    proc = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "is damaged, partial or from an incompatible version" in proc.stderr
    assert "Traceback" not in proc.stderr
    resumed = json.loads((tmp_path / "results.json").read_text())
    assert resumed["test"] == reference["test"]


def test_a_changed_config_is_refused_naming_the_field(tmp_path):
    assert _kill_at_step(tmp_path, 5) == -signal.SIGKILL
    proc = _run(tmp_path, "--config.model.num_interests=2")
    assert proc.returncode == 2
    assert "model.num_interests: 4 -> 2" in proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr


def test_nan_loss_stops_with_the_step_and_keeps_the_good_checkpoint(tmp_path):
    proc = _run(tmp_path, "--config.train.learning_rate=1e30", "--config.train.num_epochs=1")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "not finite" in last and "step" in last, last
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "results.json")


def test_nan_batches_can_be_skipped(tmp_path):
    proc = _run(
        tmp_path, "--config.train.learning_rate=1e30", "--config.train.num_epochs=1",
        "--config.train.on_nonfinite=skip",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped" in proc.stderr


def test_unwritable_workdir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = _run(blocker / "run")
    assert proc.returncode == 2
    assert str(blocker) in proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr


def test_full_disk_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        ["bash", "-c", f"ulimit -f 2 && exec {sys.executable} -m sine_jax.main "
         + " ".join(TINY) + f" --workdir={tmp_path}"],
        capture_output=True, text=True, cwd=REPO, env=_env(), timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "error:" in proc.stderr.strip().splitlines()[-1]
