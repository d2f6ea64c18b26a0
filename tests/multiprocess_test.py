"""Two CPU processes (one device each) training one run, as two hosts would: they finish
with the metrics of one process with two devices, start after start, each reading half of
every batch; they resume exactly; an error or SIGTERM in one process ends both at once.
Every wait has a hard limit: a hang fails the test instead of blocking the suite."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from sine_jax import train
from sine_jax import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = [
    "--config=configs/synthetic.py:tiny",
    "--config.data.synthetic.num_users=150",
    "--config.train.num_epochs=1",
    "--config.train.log_every_steps=5",
    "--config.checkpoint.every_steps=10",
]
RUN_LIMIT_S = 240  # a two-process run takes well under a minute here; a hang is killed
STOP_LIMIT_S = 45  # after one process fails: its peer notices within seconds (see multihost)


def _env(**extra):
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "1", **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


class Pair:
    """Processes 0 and 1 of a two-process run on WORKDIR; each one's stdout and stderr go to
    files (`out(i)`, `err(i)`). `barrier_at` = {process: step} stops those processes at that
    step (the loop's SINE_JAX_STEP_BARRIER hook); `sockets[i]` talks to that barrier."""

    def __init__(self, workdir, logs, *extra, barrier_at=None):
        self.logs = logs
        address = f"localhost:{_free_port()}"
        self.procs, self.sockets = [], {}
        for i in range(2):
            env = _env(JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2",
                       JAX_PROCESS_ID=str(i))
            fds = []
            if barrier_at and i in barrier_at:
                ours, theirs = socket.socketpair()
                env[train.STEP_BARRIER_ENV] = f"{barrier_at[i]}:{theirs.fileno()}"
                fds = [theirs.fileno()]
                self.sockets[i] = (ours, theirs)
            with open(self.out(i), "w") as out, open(self.err(i), "w") as err:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "sine_jax.main", *RUN, f"--workdir={workdir}",
                     "--config.mesh.distributed=True", *extra],
                    stdout=out, stderr=err, cwd=REPO, env=env, pass_fds=fds,
                ))
            if fds:
                self.sockets[i][1].close()
                self.sockets[i] = self.sockets[i][0]

    def out(self, i):
        return self.logs / f"process{i}.out"

    def err(self, i):
        return self.logs / f"process{i}.err"

    def last_error_line(self, i) -> str:
        return self.err(i).read_text().strip().splitlines()[-1]

    def at_barrier(self, i, limit_s=RUN_LIMIT_S) -> int:
        """Blocks until process `i` waits at its barrier; returns the step."""
        self.sockets[i].settimeout(limit_s)
        reached = self.sockets[i].recv(64)
        assert reached, f"process {i} ended before its barrier: {self.tail(i)}"
        return int(reached)

    def wait(self, limit_s, procs=(0, 1)) -> list[int]:
        """The exit codes of `procs`; kills both and fails when they are not done in time."""
        deadline = time.monotonic() + limit_s
        codes = []
        for i in procs:
            try:
                codes.append(self.procs[i].wait(timeout=max(deadline - time.monotonic(), 0)))
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"process {i} still running after {limit_s} s (hung); "
                            f"stderr: {self.tail(0)} | {self.tail(1)}")
        return codes

    def kill(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def tail(self, i) -> str:
        return self.err(i).read_text()[-1500:]


def _results(workdir):
    results = json.loads((workdir / "results.json").read_text())
    return results["best_step"], results["test"], results["valid"]


@pytest.fixture(scope="module")
def one_process_two_devices(tmp_path_factory):
    """(best step, test, valid metrics) and metrics.jsonl of one process with two devices."""
    workdir = tmp_path_factory.mktemp("one_process")
    proc = subprocess.run(
        [sys.executable, "-m", "sine_jax.main", *RUN, f"--workdir={workdir}"],
        capture_output=True, text=True, cwd=REPO, env=_env(JAX_NUM_CPU_DEVICES="2"),
        timeout=RUN_LIMIT_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _results(workdir), (workdir / "metrics.jsonl").read_text().splitlines()


def test_two_processes_start_after_start_give_the_one_process_metrics(
        one_process_two_devices, tmp_path):
    """Five starts in a row: none hangs, each gives the metrics of one process with two
    devices, each process reads its half of every batch of 64, and only process 0 writes
    the workdir's files (metrics once per step, one TensorBoard file)."""
    reference, reference_metrics = one_process_two_devices
    for start in range(5):
        workdir, logs = tmp_path / f"run{start}", tmp_path / f"logs{start}"
        logs.mkdir()
        pair = Pair(workdir, logs)
        assert pair.wait(RUN_LIMIT_S) == [0, 0], f"start {start}: {pair.tail(0)} | {pair.tail(1)}"
        best_step, test, valid = _results(workdir)
        assert best_step == reference[0]
        assert test == pytest.approx(reference[1], abs=1e-9)
        assert valid == pytest.approx(reference[2], abs=1e-9)
        for i, rows in ((0, "rows 0..31 (32 examples)"), (1, "rows 32..63 (32 examples)")):
            assert f"process {i} of 2 reads {rows} of each batch of 64" in pair.err(i).read_text()
            # Both print the results line (after Gloo's own "connected" line).
            assert json.loads(pair.out(i).read_text().splitlines()[-1])["test"] == test
        assert len((workdir / "metrics.jsonl").read_text().splitlines()) == len(
            reference_metrics)
        assert len(os.listdir(workdir / "tensorboard")) == 1


def test_an_error_in_one_process_ends_both_with_its_one_line_message(tmp_path):
    pair = Pair(tmp_path / "run", tmp_path, barrier_at={1: 20})
    assert pair.at_barrier(1) == 20
    pair.sockets[1].sendall(train.FAIL_BYTE)  # process 1 fails at step 20; 0 is at its side
    assert pair.wait(STOP_LIMIT_S) == [2, 2]
    message = "step 20: failure injected by SINE_JAX_STEP_BARRIER"
    assert pair.last_error_line(1) == f"error: {message}"
    assert pair.last_error_line(0) == f"error: process 1 of 2 stopped: {message}"
    for i in range(2):
        assert "Traceback" not in pair.err(i).read_text()


def test_a_workdir_in_use_stops_both_processes_naming_its_owner(tmp_path):
    """Process 0 holds the workdir's lock for the run (its peer takes none, so the two do not
    refuse each other); a lock held by another run refuses process 0, and process 1 stops
    with it instead of waiting for it."""
    workdir = tmp_path / "run"
    with workdir_lib.lock(str(workdir)):  # as another run's trainer holds it
        pair = Pair(workdir, tmp_path)
        assert pair.wait(RUN_LIMIT_S) == [2, 2]
    refusal = f"{workdir} is in use by process {os.getpid()}"
    assert pair.last_error_line(0).startswith(f"error: {refusal}")
    assert pair.last_error_line(1).startswith(f"error: process 0 of 2 stopped: {refusal}")


def test_sigterm_ends_a_process_at_once_and_its_peer_follows(tmp_path):
    pair = Pair(tmp_path / "run", tmp_path, barrier_at={1: 20})
    assert pair.at_barrier(1) == 20
    pair.procs[1].send_signal(signal.SIGTERM)
    assert pair.wait(10, procs=(1,)) == [-signal.SIGTERM]
    assert pair.wait(STOP_LIMIT_S, procs=(0,))[0] != 0  # not left waiting for its peer


def test_two_processes_killed_mid_run_resume_to_the_same_metrics(
        one_process_two_devices, tmp_path):
    """Both processes SIGKILLed at step 40 (its checkpoint being written), then started
    again: each host's data iterator resumes where it was and the run ends with the
    uninterrupted metrics. A single process cannot resume their checkpoints (the data
    iterator's position is recorded per process): one line naming the count."""
    workdir = tmp_path / "run"
    pair = Pair(workdir, tmp_path, barrier_at={0: 40, 1: 40})
    assert [pair.at_barrier(i) for i in range(2)] == [40, 40]
    pair.kill()
    single = tmp_path / "single"
    shutil.copytree(workdir, single)
    proc = subprocess.run(
        [sys.executable, "-m", "sine_jax.main", *RUN, f"--workdir={single}"],
        capture_output=True, text=True, cwd=REPO, env=_env(), timeout=RUN_LIMIT_S,
    )
    assert proc.returncode == 2
    last_line = proc.stderr.strip().splitlines()[-1]
    assert "was written by a run of 2 process(es) and this run has 1" in last_line
    logs = tmp_path / "resumed"
    logs.mkdir()
    resumed = Pair(workdir, logs)
    assert resumed.wait(RUN_LIMIT_S) == [0, 0], resumed.tail(0)
    assert "resumed from checkpoint at step" in resumed.err(0).read_text()
    best_step, test, valid = _results(workdir)
    reference = one_process_two_devices[0]
    assert best_step == reference[0]
    assert test == pytest.approx(reference[1], abs=1e-9)
    assert valid == pytest.approx(reference[2], abs=1e-9)


def test_the_stop_line_stays_last_against_the_coordination_clients_own_log():
    """What the coordination client logs itself (from C++) after a process printed its error,
    such as the service's socket closing once process 0 has exited, does not follow the line."""
    script = (
        "import os\n"
        "from sine_jax import multihost\n"
        "class Client:  # logs from C++ as the real client does when its service is gone\n"
        "    def key_value_set(self, *args, **kwargs):\n"
        "        os.write(2, b'Socket closed\\n')\n"
        "multihost._client = Client()\n"
        "multihost._end('step 3: failure', 2)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO, env=_env(), timeout=STOP_LIMIT_S)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "error: step 3: failure"
    assert "Socket closed" not in done.stderr
