"""A grid of training runs: one `sine_jax.main` job per point, each in its own workdir
(`launch/sweep.py` is its command line; the table tools run their grids with it).

The jobs are the Cartesian product of the grid axes (and of the seeds, as train.seed); the
fixed overrides go to every job. Values go to the training CLI as written (a value with
commas inside brackets stays whole: 'eval.ks=(10,50),(20,50)'). Job
`model.num_interests=4, model.num_prototypes=50, train.seed=0` runs in
SWEEP_DIR/num_interests-4_num_prototypes-50_seed-0 and writes its output to log.txt there.

A job whose workdir has results.json is done and skipped; an interrupted one resumes from its
checkpoints. A finished job whose recorded config differs from what its command would train
now (a preset changed, another override) is refused before anything runs, naming the job and
the fields: its results would be stale. With several GPUs visible (CUDA_VISIBLE_DEVICES, else
`nvidia-smi -L`; or explicit ids) one job runs per GPU at a time, each seeing only its GPU;
on CPU `cpu_jobs` jobs run at a time. The jobs share SWEEP_DIR/cache (preprocessed data,
unless data.cache_dir is set) and SWEEP_DIR/jax_cache (compiled programs, unless
JAX_COMPILATION_CACHE_DIR is set). SWEEP_DIR/sweep.json lists every job with its overrides,
status (done, failed, skipped or pending), test and valid metrics and wall_seconds.

No JAX in this process: the sweep stays light, the jobs are subprocesses.
"""

import dataclasses
import difflib
import itertools
import json
import os
import queue
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent import futures

from absl import flags
from ml_collections import config_flags

from sine_jax.errors import SineError
from sine_jax.workdir import write_json_atomic

SEED_FIELD = "train.seed"
_MAX_NAME_CHARS = 200


class SweepError(SineError):
    """A bad sweep argument: the message is one line naming it."""


@dataclasses.dataclass(frozen=True)
class Job:
    name: str
    workdir: str
    overrides: dict[str, str]  # this job's grid point, field -> value as written
    command: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# Arguments: grid axes, fixed overrides, config fields.


def split_values(text: str) -> list[str]:
    """Splits at the commas outside brackets: '(10,50),(20,50)' -> ['(10,50)', '(20,50)']."""
    values, current, depth = [], "", 0
    for char in text:
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
            continue
        depth += (char in "([{") - (char in ")]}")
        current += char
    values.append(current.strip())
    return values


def parse_override(text: str, flag: str, form: str = "FIELD=VALUE, e.g. train.seed=1"):
    """'FIELD=VALUE' -> (FIELD, VALUE)."""
    field, sep, value = text.partition("=")
    field = field.strip().removeprefix("config.")
    if not sep or not field:
        raise SweepError(f"{flag}={text!r}: expected {form}")
    return field, value


def parse_axis(text: str, flag: str = "--grid") -> tuple[str, list[str]]:
    """'model.num_interests=2,4,8' -> ('model.num_interests', ['2', '4', '8']); errors name
    `flag`."""
    field, values = parse_override(text, flag, "FIELD=V1,V2,..., e.g. train.seed=1,2")
    values = split_values(values)
    if "" in values:
        raise SweepError(f"{flag}={text!r}: empty value; expected FIELD=V1,V2,...")
    if len(set(values)) < len(values):
        raise SweepError(f"{flag}={text!r}: a value is repeated")
    return field, values


def parse_names(text: str, flag: str, allowed) -> list[str]:
    """'b,a' -> ['a', 'b']: distinct names among `allowed`, in `allowed`'s order."""
    names = split_values(text)
    if any(name not in allowed for name in names) or len(set(names)) < len(names):
        raise SweepError(f"{flag}={text!r}: expected distinct names among {', '.join(allowed)}")
    return [name for name in allowed if name in names]


def parse_devices(text: str) -> list[str]:
    devices = split_values(text)
    if "" in devices:
        raise SweepError(f"--devices={text!r}: expected GPU ids, e.g. 0,1")
    return devices


def parse_seeds(text: str) -> list[str]:
    seeds = split_values(text)
    if not all(re.fullmatch(r"\d+", seed) for seed in seeds) or len(set(seeds)) < len(seeds):
        raise SweepError(f"--seeds={text!r}: expected distinct non-negative integers, e.g. 0,1,2")
    return seeds


def sweep_axes(grid: list[str], seeds: str | None) -> list[tuple[str, list[str]]]:
    """The --grid axes in the order given, then --seeds as train.seed."""
    axes = [parse_axis(text) for text in grid]
    if seeds is not None:
        axes.append((SEED_FIELD, parse_seeds(seeds)))
    if not axes:
        raise SweepError("nothing to sweep: give at least one --grid=FIELD=V1,V2,... or --seeds")
    return axes


def check_distinct_fields(fields: list[str]) -> None:
    for field in fields:
        if fields.count(field) > 1:
            raise SweepError(f"{field} is given more than once (in --grid, --seeds or --set)")


def load_config(spec: str):
    """The ConfigDict of 'path/to/config.py[:arg]', as the training CLI builds it."""
    from sine_jax import run_config  # no JAX: the sweep process stays light
    from sine_jax.errors import ConfigError

    try:
        return run_config.load_config_file(spec)
    except ConfigError as e:
        raise SweepError(str(e)) from e


def config_from_args(spec: str, overrides: dict[str, str]):
    """The ConfigDict of `python -m sine_jax.main --config=SPEC --config.FIELD=VALUE ...`, the
    values parsed as the training CLI parses them."""
    load_config(spec)  # one-line errors for the file; puts the cwd on sys.path
    argv = ["config", f"--config={spec}", *(f"--config.{f}={v}" for f, v in overrides.items())]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=flag_values, sys_argv=argv)
    try:
        flag_values(argv)
    except flags.Error as e:
        raise SweepError(str(e).splitlines()[0]) from e
    return flag_values.config


def check_field(config, field: str) -> None:
    """Raises SweepError naming `field` when the config has no such field."""
    node = config
    for depth, part in enumerate(field.split(".")):
        keys = list(node.keys()) if hasattr(node, "keys") else []
        if part not in keys:
            prefix = ".".join(field.split(".")[:depth])
            close = difflib.get_close_matches(part, keys, n=1)
            hint = f"; did you mean {'.'.join(filter(None, [prefix, close[0]]))}?" if close else ""
            raise SweepError(f"unknown config field {field}{hint}")
        node = node[part]
    if hasattr(node, "keys"):
        raise SweepError(f"{field} is a group of fields, not a field")


# ---------------------------------------------------------------------------------------------
# Jobs: grid expansion, names, commands.


def expand(axes: list[tuple[str, list[str]]]) -> list[dict[str, str]]:
    """The Cartesian product of the axes, the last axis varying fastest."""
    fields = [field for field, _ in axes]
    return [dict(zip(fields, point)) for point in itertools.product(*(v for _, v in axes))]


def short_labels(fields: list[str]) -> dict[str, str]:
    """Each field's shortest dotted suffix that no other field ends with
    (model.num_interests -> num_interests; train.seed and data.synthetic.seed stay long)."""
    labels = {}
    for field in fields:
        parts = field.split(".")
        for length in range(1, len(parts) + 1):
            label = ".".join(parts[-length:])
            others = [f for f in fields if f != field]
            if not any(f == label or f.endswith("." + label) for f in others):
                break
        labels[field] = label
    return labels


def safe_value(value: str) -> str:
    """A value as a path component: runs of other characters than A-Z a-z 0-9 . , + - become _."""
    return re.sub(r"[^A-Za-z0-9.,+-]+", "_", value).strip("_") or "_"


def job_name(overrides: dict[str, str], labels: dict[str, str]) -> str:
    """{'model.num_interests': '4', 'train.seed': '0'} -> 'num_interests-4_seed-0'."""
    return "_".join(f"{labels[field]}-{safe_value(value)}" for field, value in overrides.items())


def check_names(names: list[str]) -> None:
    for name in names:
        if names.count(name) > 1:
            raise SweepError(f"two grid points share the job name {name}: make their values differ "
                             "in letters, digits or . , + -")
        if len(name) > _MAX_NAME_CHARS:
            raise SweepError(f"job name longer than {_MAX_NAME_CHARS} characters: {name}")


def train_command(config_spec: str, workdir: str, overrides: dict[str, str]) -> tuple[str, ...]:
    return (sys.executable, "-m", "sine_jax.main", f"--config={config_spec}",
            f"--workdir={workdir}", *(f"--config.{f}={v}" for f, v in overrides.items()))


def make_jobs(config_spec: str, sweep_dir: str, axes, fixed: dict[str, str]) -> list[Job]:
    labels = short_labels([field for field, _ in axes])
    points = expand(axes)
    names = [job_name(point, labels) for point in points]
    check_names(names)
    jobs = []
    for name, point in zip(names, points):
        workdir = os.path.join(sweep_dir, name)
        command = train_command(config_spec, workdir, {**fixed, **point})
        jobs.append(Job(name=name, workdir=workdir, overrides=point, command=command))
    return jobs


def plan(config_spec: str, sweep_dir: str, *, grid: Sequence[str] = (),
         seeds: str | None = None, sets: Sequence[str] = ()) -> list[Job]:
    """The jobs of the --grid axes (FIELD=V1,V2,...), --seeds and the --set overrides
    (FIELD=VALUE) for --config=CONFIG_SPEC in SWEEP_DIR; every argument is validated first
    (SweepError before anything runs)."""
    axes = sweep_axes(list(grid), seeds)
    fixed_items = [parse_override(text, "--set") for text in sets]
    fields = [field for field, _ in axes + fixed_items]
    check_distinct_fields(fields)
    config = load_config(config_spec)
    for field in fields:
        check_field(config, field)
    fixed = dict(fixed_items)
    if "data.cache_dir" not in fixed and config.data.get("cache_dir") == "":
        fixed["data.cache_dir"] = os.path.join(sweep_dir, "cache")  # preprocess once
    jobs = make_jobs(config_spec, sweep_dir, axes, fixed)
    check_finished_jobs(jobs)
    return jobs


# ---------------------------------------------------------------------------------------------
# Results: skip logic and the summary.


def results_path(job: Job) -> str:
    return os.path.join(job.workdir, "results.json")


def is_done(job: Job) -> bool:
    return os.path.isfile(results_path(job))


def stale_fields(job: Job) -> list[str]:
    """'field: recorded -> now' for each field where a finished job's results.json config
    differs from the config its command trains now (run-length fields excepted)."""
    from sine_jax import run_config

    with open(results_path(job)) as f:
        recorded = json.load(f).get("config")
    if recorded is None:  # not written by sine_jax.main: nothing to compare
        return []
    args = [arg for arg in job.command if arg.startswith("--config")]  # see train_command
    spec = args[0].split("=", 1)[1]
    overrides = dict(arg.removeprefix("--config.").split("=", 1) for arg in args[1:])
    now = json.loads(config_from_args(spec, overrides).to_json())
    return run_config.changes(recorded, now, run_config.differing_fields(recorded, now))


def check_finished_jobs(jobs: list[Job]) -> None:
    """Raises SweepError when a finished job's results are stale (see `stale_fields`)."""
    for job in jobs:
        changed = stale_fields(job) if is_done(job) else []
        if changed:
            more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            raise SweepError(f"{job.workdir} finished with another config ({', '.join(changed[:3])}"
                             f"{more}): move that workdir away to rerun it, or give another "
                             "--workdir")


def last_line(path: str) -> str:
    """The last non-empty line of a text file ('' when there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 8192))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def job_entry(job: Job, status: str, returncode: int | None = None) -> dict:
    """One job in sweep.json: overrides, status and, when results.json exists, its metrics."""
    entry = {"name": job.name, "workdir": job.workdir, "overrides": job.overrides,
             "status": status}
    if status == "failed":
        entry["returncode"] = returncode
        entry["error"] = last_line(os.path.join(job.workdir, "log.txt"))
    if is_done(job):
        with open(results_path(job)) as f:
            results = json.load(f)
        entry.update({key: results[key] for key in ("test", "valid", "best_step", "wall_seconds")
                      if key in results})
    return entry


# ---------------------------------------------------------------------------------------------
# Devices and running.


def visible_gpus(environ: dict[str, str], smi_output: str) -> list[str]:
    """The GPU ids a job can be pinned to with CUDA_VISIBLE_DEVICES ([] on CPU)."""
    platforms = environ.get("JAX_PLATFORMS", "")
    if platforms and not {"cuda", "gpu"} & set(platforms.split(",")):
        return []
    if "CUDA_VISIBLE_DEVICES" in environ:
        ids = [d.strip() for d in environ["CUDA_VISIBLE_DEVICES"].split(",")]
        return list(itertools.takewhile(lambda d: d and not d.startswith("-"), ids))
    count = sum(line.startswith("GPU ") for line in smi_output.splitlines())
    return [str(i) for i in range(count)]


def job_slots(devices: str | None, cpu_jobs: int) -> list[str | None]:
    """Where jobs run at the same time: the --devices GPU ids, else the visible GPUs, else
    `cpu_jobs` CPU slots (None). Raises SweepError for a bad --devices or --cpu_jobs."""
    if cpu_jobs < 1:
        raise SweepError(f"--cpu_jobs={cpu_jobs} must be >= 1")
    if devices:
        return parse_devices(devices)
    return visible_gpus(os.environ, nvidia_smi_list()) or [None] * cpu_jobs


def define_slot_flags(flag_values: flags.FlagValues) -> None:
    """--devices and --cpu_jobs (`job_slots`), shared by every launch tool that runs jobs."""
    flags.DEFINE_string("devices", None, "GPU ids, one job on each at a time (default: visible)",
                        flag_values=flag_values)
    flags.DEFINE_integer("cpu_jobs", 1, "jobs at a time when no GPU is visible (a CPU run uses "
                         "about one core, so up to the number of cores pays)",
                         flag_values=flag_values)


def nvidia_smi_list() -> str:
    """`nvidia-smi -L` ('' without NVIDIA driver); JAX is not imported in the sweep process."""
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                              timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def job_environment(sweep_dir: str, device: str | None) -> dict[str, str]:
    env = dict(os.environ)
    jax_cache = os.path.abspath(os.path.join(sweep_dir, "jax_cache"))
    env.setdefault("JAX_COMPILATION_CACHE_DIR", jax_cache)
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    return env


def run_job(job: Job, env: dict[str, str]) -> int:
    """Runs the job's command, its output appended to WORKDIR/<name>/log.txt; the exit code."""
    os.makedirs(job.workdir, exist_ok=True)
    with open(os.path.join(job.workdir, "log.txt"), "a") as log:
        log.write(f"$ {shlex.join(job.command)}\n")
        log.flush()
        finished = subprocess.run(job.command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  check=False)
    return finished.returncode


class Progress:
    """One line per event, prefixed with the time since the sweep started; whole lines even
    when several job threads print at once."""

    def __init__(self, total: int):
        self.start, self.total = time.monotonic(), total
        self.lock = threading.Lock()

    def print(self, index: int, text: str) -> None:
        elapsed = int(time.monotonic() - self.start)
        clock = f"{elapsed // 3600:02d}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}"
        with self.lock:
            print(f"[{clock}] {index + 1}/{self.total} {text}", flush=True)


def run_sweep(jobs: list[Job], devices: list[str | None], sweep_dir: str) -> list[dict]:
    """Runs the jobs not done yet, one per device at a time; sweep.json after each one ends."""
    progress = Progress(len(jobs))
    entries = [job_entry(job, "skipped" if is_done(job) else "pending") for job in jobs]
    for index, entry in enumerate(entries):
        if entry["status"] == "skipped":
            progress.print(index, f"skipped {entry['name']} (results.json exists)")
    summary_path = os.path.join(sweep_dir, "sweep.json")
    write_json_atomic(summary_path, {"jobs": entries})
    free_devices = queue.Queue()
    for device in devices:
        free_devices.put(device)

    def run_on_a_free_device(index: int) -> tuple[int, dict]:
        device = free_devices.get()
        try:
            where = "CPU" if device is None else f"GPU {device}"
            progress.print(index, f"start {jobs[index].name} on {where}")
            start = time.monotonic()
            returncode = run_job(jobs[index], job_environment(sweep_dir, device))
            entry = job_entry(jobs[index], "done" if returncode == 0 else "failed", returncode)
            # printed before the device is free again, so before the next job's start line
            progress.print(index, finish_line(entry, time.monotonic() - start))
            return index, entry
        finally:
            free_devices.put(device)

    pending = [i for i, entry in enumerate(entries) if entry["status"] == "pending"]
    with futures.ThreadPoolExecutor(max_workers=len(devices)) as pool:
        running = [pool.submit(run_on_a_free_device, index) for index in pending]
        try:
            for future in futures.as_completed(running):
                index, entries[index] = future.result()
                write_json_atomic(summary_path, {"jobs": entries})
        finally:
            pool.shutdown(cancel_futures=True)  # on Ctrl-C: start nothing more
    return entries


def finish_line(entry: dict, seconds: float) -> str:
    if entry["status"] == "done":
        return f"done {entry['name']} in {seconds:.0f} s"
    return (f"FAILED {entry['name']} (exit {entry['returncode']}) in {seconds:.0f} s: "
            f"{entry['error']}")


def run_jobs(jobs: list[Job], devices: list[str | None], sweep_dir: str) -> bool:
    """`run_sweep`; False when interrupted (Ctrl-C stops the running jobs; a rerun resumes)."""
    try:
        run_sweep(jobs, devices, sweep_dir)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return False
    return True
