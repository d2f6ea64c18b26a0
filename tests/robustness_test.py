"""Failures end in a clean resume or a one-line error: kill -9, damaged checkpoints, NaN, disk;
an input file changed under a run, two trainers on one workdir, hostile flags and values."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import types

import numpy as np
import pytest

from sine_jax import workdir as workdir_lib
from sine_jax.data import synthetic

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


def _last_line(proc):
    return proc.stderr.strip().splitlines()[-1]


def _kill_at_step(workdir, step, *extra, timeout=300):
    """Starts the CLI, which stops at `step` (the loop's SINE_JAX_STEP_BARRIER hook: after
    that step's validation and the start of its checkpoint save), and SIGKILLs it there.
    Returns the step it reached (None when it ended first) and its exit code."""
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sine_jax.main", *TINY, f"--workdir={workdir}", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, pass_fds=[theirs.fileno()],
        env=dict(_env(), SINE_JAX_STEP_BARRIER=f"{step}:{theirs.fileno()}"),
    )
    theirs.close()
    with ours:
        ours.settimeout(timeout)
        reached = ours.recv(64)  # blocks until the run is at the barrier (b"" if it ended)
        proc.kill()
    proc.wait()
    return (int(reached) if reached else None), proc.returncode


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """(workdir, results) of an uninterrupted run; tests copy the workdir, never change it."""
    workdir = tmp_path_factory.mktemp("reference")
    proc = _run(workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, json.loads((workdir / "results.json").read_text())


@pytest.fixture(scope="module")
def reference(reference_run):
    return reference_run[1]


def test_kill_9_at_three_steps_then_rerun_gives_the_uninterrupted_results(reference, tmp_path):
    # Before the first checkpoint (step 10), at a validation step (eval.every_steps=40) as its
    # checkpoint is being written, and between checkpoints after resuming from step 40.
    for step in (7, 40, 63):
        assert _kill_at_step(tmp_path, step) == (step, -signal.SIGKILL)
    proc = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = json.loads((tmp_path / "results.json").read_text())
    assert resumed["best_step"] == reference["best_step"]
    assert resumed["test"] == reference["test"]
    assert resumed["valid"] == reference["valid"]


def test_a_damaged_latest_checkpoint_is_skipped_with_a_one_line_warning(reference, tmp_path):
    assert _kill_at_step(tmp_path, 45) == (45, -signal.SIGKILL)
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
    assert _kill_at_step(tmp_path, 5) == (5, -signal.SIGKILL)
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


# --- Damaged checkpoints: quarantined, written again; eval falls back ---------------------------


def _steps(checkpoints):
    return sorted(int(s) for s in os.listdir(checkpoints) if s.isdigit())


def test_a_damaged_best_checkpoint_is_quarantined_and_written_again(reference_run, tmp_path):
    """The reported reproduction: results.json deleted, every file of the newest checkpoint
    (the best) overwritten with random bytes, the same command again. Before, the damaged step
    was skipped on restore but never rewritten (it existed), and the final restore of the best
    step read it again: a traceback, for ever."""
    workdir = tmp_path / "run"
    shutil.copytree(reference_run[0], workdir)
    (workdir / "results.json").unlink()
    newest = _steps(workdir / "checkpoints")[-1]
    assert newest == reference_run[1]["best_step"]
    for path in (workdir / "checkpoints" / str(newest)).rglob("*"):
        if path.is_file():
            path.write_bytes(os.urandom(path.stat().st_size + 1))
    proc = _run(workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "is damaged" in line]
    assert len(warnings) == 1 and f"checkpoints.damaged/{newest}" in warnings[0]
    resumed = json.loads((workdir / "results.json").read_text())
    assert resumed["best_step"] == reference_run[1]["best_step"]
    assert resumed["test"] == reference_run[1]["test"]
    assert resumed["valid"] == reference_run[1]["valid"]
    assert (workdir / "checkpoints" / str(newest) / "sha256.json").is_file()  # written again
    proc = _run(workdir, "--mode=eval")
    assert proc.returncode == 0 and "is damaged" not in proc.stderr, proc.stderr[-3000:]


def test_eval_and_export_fall_back_to_the_best_checkpoint_that_loads(
    reference_run, tmp_path, flip_a_bit_of_array_data
):
    """One flipped bit in the best checkpoint's array data: before, it loaded silently as
    other numbers; now it is damaged, and eval uses the loadable checkpoint with the best
    validation metric, with a warning. When none loads: one line and exit 2."""
    workdir = tmp_path / "run"
    shutil.copytree(reference_run[0], workdir)
    best = reference_run[1]["best_step"]
    flip_a_bit_of_array_data(workdir / "checkpoints" / str(best))
    proc = _run(workdir, "--mode=eval")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "does not match its checksum" in proc.stderr
    (other,) = _steps(workdir / "checkpoints")
    assert f"using step {other} instead" in proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["best_step"] == other
    flip_a_bit_of_array_data(workdir / "checkpoints" / str(other))
    for mode in ("eval", "export"):
        proc = _run(workdir, f"--mode={mode}")
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
        assert "no checkpoint loads (the damaged ones were moved to" in _last_line(proc)


# --- An input file changed under a run ----------------------------------------------------------


def _write_interactions(path, mirror=False):
    """The tiny synthetic log as a `user item` file; `mirror` renumbers the items M+1-i (the
    same sizes, so the old checkpoints still fit the new content)."""
    log, _ = synthetic.generate(num_users=300, num_items=200, num_categories=10)
    items = 201 - log.items if mirror else log.items
    path.write_text("".join(f"{u} {i}\n" for u, i in zip(log.users, items)))


def test_an_input_file_edited_after_the_run_started_is_refused_naming_it(tmp_path):
    """Before, config.json recorded only the path: the rerun resumed on the new content and
    reported metrics of checkpoints trained on the old one."""
    data = tmp_path / "log.txt"
    _write_interactions(data)
    workdir = tmp_path / "run"
    args = ["--config.data.format=interactions", f"--config.data.path={data}"]
    assert _kill_at_step(workdir, 75, *args) == (75, -signal.SIGKILL)  # best step 40 saved
    recorded = json.loads((workdir / "inputs.json").read_text())["files"][str(data)]
    _write_interactions(data, mirror=True)
    for mode in ("train", "eval", "export"):
        proc = _run(workdir, *args, f"--mode={mode}")
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
        assert _last_line(proc).startswith(f"error: {data} changed since {workdir} started")
        assert "--allow_config_change" in _last_line(proc)
    proc = _run(workdir, *args, "--mode=eval", "--allow_config_change")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _write_interactions(data)  # the recorded content again, with a new mtime: accepted
    assert os.stat(data).st_mtime_ns != recorded["mtime_ns"]
    proc = _run(workdir, *args, "--mode=eval")
    assert proc.returncode == 0, proc.stderr[-3000:]


# --- Two trainers on one workdir -----------------------------------------------------------------


def test_a_second_trainer_exits_at_once_naming_the_workdir_and_the_owner(tmp_path):
    """The lock is held by this test process (as a running trainer holds it); before, both
    trained, one died with a wrong diagnosis and metrics.jsonl mixed both."""
    with workdir_lib.lock(str(tmp_path)):
        proc = _run(tmp_path)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
        assert _last_line(proc).startswith(
            f"error: {tmp_path} is in use by process {os.getpid()} on ")
        assert os.listdir(tmp_path) == [workdir_lib.LOCK_FILE]  # nothing else was written


# --- Hostile flags and values: one line, exit 2 --------------------------------------------------


@pytest.mark.parametrize("flag, message", [
    ("--config.model.num_interest=4", "error: --config.model.num_interest: the config has no "
     "field 'num_interest'; Did you mean \"num_interests\" instead of \"num_interest\"?"),
    ("--config.train.batch_size=abc", "error: flag --config.train.batch_size=abc: invalid "
     "literal for int() with base 10: 'abc'"),
    ("--config.eval.ks=abc", "error: eval.ks=('abc',) must be positive integer cut-offs"),
    ("--config.train.seed=-1", "error: train.seed=-1 must be an integer in [0, 2**32)"),
    ("--config.train.learning_rate=inf", "error: train.learning_rate=inf must be a finite"),
])
def test_bad_flags_and_values_are_one_line_and_exit_2(tmp_path, flag, message):
    proc = _run(tmp_path / "run", flag)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert _last_line(proc).startswith(message), _last_line(proc)
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_a_recorded_config_that_is_not_an_object_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text("[]")
    proc = _run(tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert _last_line(proc) == (f"error: {tmp_path}/config.json: holds a JSON list, not an "
                                "object; remove it to start this workdir afresh")


@pytest.mark.parametrize("tool", ["benchmark.py", "measure_preprocessing.py",
                                  "serving_benchmark.py"])
def test_launch_tools_with_global_flags_take_the_same_error_path(tool):
    proc = subprocess.run(
        [sys.executable, os.path.join("launch", tool), "--config=configs/synthetic.py:tiny",
         "--config.model.num_interest=4"],
        capture_output=True, text=True, cwd=REPO, env=_env(), timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.count("\n") == 1 and 'Did you mean "num_interests"' in proc.stderr


def test_a_non_finite_step_before_any_checkpoint_says_so(tmp_path):
    """Before: 'stopped with the last good checkpoint (step None)'."""
    from sine_jax import checkpointing, train
    from sine_jax.errors import SineError

    ckpt = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), keep=2)
    state = types.SimpleNamespace(nonfinite_steps=np.int32(1), first_nonfinite_step=np.int32(2))
    with pytest.raises(SineError) as err:
        train._NonfiniteCheck("stop", ckpt)(state)
    assert str(err.value).startswith(
        "step 2: the loss or a gradient is not finite; stopped before any checkpoint was written")
    ckpt.close()
