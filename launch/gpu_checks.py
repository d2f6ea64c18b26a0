"""The GPU checks in one run of about 8 minutes on one H100 or H200: the Taobao-shaped step.

Runs, each as its own command (recorded with its output) under one time budget:
  1. the environment: device, driver, Python and library versions;
  2. the train step at the Taobao shapes (K=8, L=1000, D=128, n=20, 10 x B sampled
     negatives, 4M items, row-sparse Adam) at each --batch_sizes, in bfloat16, then float32
     (`launch/benchmark.py`: examples/s, roofline fraction against the datasheet peak of
     the compute dtype and the HBM bandwidth, the input pipeline's examples/s per host);
  3. the time from `python -m sine_jax.main` starting to the end of its first training
     step (data, model, compilation: its "compiled; the first step took" line), at the
     Taobao model shapes on synthetic data (50k users, 200k items);
  4. the full-ranking evaluation throughput over the 4M items (users/s).
The fastest batch size of each dtype is picked. Everything goes to OUT/gpu_checks.json
(rewritten after every check, so a cut-off run still returns what it measured: date,
device, versions, each check's exact command, seconds and results) and OUT/gpu_checks.log
(every command's output).

Here, on a machine with pip access, first fetch the wheels the GPU image lacks (grain,
ml_collections, tensorboardX, polars and what they need; about 57 MB) into .whl/ (git
ignores it):

  python launch/gpu_checks.py --download_wheels=.whl

then, on the GPU machine, from the repository root (Python 3.12 with JAX CUDA, flax, optax
and orbax-checkpoint installed):

  python3 launch/gpu_checks.py --wheels=.whl --out=$OUT
"""

import datetime
import json
import os
import re
import shlex
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # sine_jax from this checkout (the GPU image does not install it)

from absl import flags  # noqa: E402

from sine_jax import cli  # noqa: E402

# The packages sine_jax needs that the GPU image lacks (its jax, flax, optax, orbax, absl,
# numpy, protobuf, etils and cloudpickle are used as they are), at the versions tested here.
WHEELS = ("grain==0.2.18", "array_record==0.8.6", "portpicker==1.6.0", "ml_collections==1.1.0",
          "tensorboardX==2.6.5", "polars==2.1.0", "polars-runtime-32==2.1.0")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
SITE = "/tmp/sine_jax_site"  # where --wheels are installed
TAOBAO = ["--config=configs/taobao.py"]
# The Taobao model on the built-in synthetic data (configs/taobao.py reads UserBehavior.csv).
TAOBAO_ON_SYNTHETIC = [
    "--config=configs/synthetic.py", "--config.data.synthetic.num_users=50000",
    "--config.data.synthetic.num_items=200000", "--config.data.synthetic.num_categories=1000",
    "--config.model.num_interests=8", "--config.model.num_prototypes=1000",
    "--config.model.embed_dim=128", "--config.model.max_seq_len=20",
    "--config.loss.negatives_per_example=10",
]
_ENVIRONMENT = """
import json, platform, subprocess, jax, jaxlib, flax, optax, orbax.checkpoint, grain, numpy
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
except OSError:
    smi = None
print(json.dumps({"python": platform.python_version(), "jax": jax.__version__,
    "jaxlib": jaxlib.__version__, "flax": flax.__version__, "optax": optax.__version__,
    "orbax_checkpoint": orbax.checkpoint.__version__, "grain": grain.__version__,
    "numpy": numpy.__version__, "devices": [str(d) for d in jax.devices()],
    "device_kind": jax.devices()[0].device_kind, "nvidia_smi": smi}))
"""


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_string("out", None, "Write gpu_checks.json and gpu_checks.log here.",
                        flag_values=flag_values)
    flags.DEFINE_string("wheels", None, "Install these wheels first (a directory).",
                        flag_values=flag_values)
    flags.DEFINE_string("download_wheels", None,
                        "Only download the wheels the GPU image lacks into this directory.",
                        flag_values=flag_values)
    flags.DEFINE_list("batch_sizes", ["2048", "8192", "16384"], "Global batch sizes to time.",
                      flag_values=flag_values)
    flags.DEFINE_integer("num_items", 4_000_000, "Catalogue size M.", flag_values=flag_values)
    flags.DEFINE_integer("eval_users", 65536, "Users ranked in the evaluation check.",
                         flag_values=flag_values)
    flags.DEFINE_float("budget_seconds", 480.0, "Time for all checks; later ones are skipped.",
                       flag_values=flag_values)


class Checks:
    """Runs the checks' commands within the budget and records them in OUT/gpu_checks.json."""

    def __init__(self, out: str, budget_seconds: float, env: dict):
        self.out, self.env = out, env
        self.deadline = time.monotonic() + budget_seconds
        self.log = open(os.path.join(out, "gpu_checks.log"), "a")  # noqa: SIM115
        self.summary = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": shlex.join([sys.executable, *sys.argv]),
            "checks": [],
        }

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, argv: list[str], limit_s: float,
            watch: str | None = None) -> dict:
        """Runs `argv`; its output goes to the log. With `watch` (a regex), stops the command
        at the first output line that matches it and records when each line came."""
        record = {"name": name, "command": shlex.join(argv)}
        limit_s = min(limit_s, self.remaining())
        if limit_s < 20:
            record["skipped"] = "out of time"
            return self._add(record)
        self.log.write(f"\n=== {name}: {record['command']}\n")
        self.log.flush()
        start = time.monotonic()
        proc = subprocess.Popen(argv, cwd=REPO, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        lines = []  # (seconds since start, line)
        try:
            for line in proc.stdout:
                elapsed = time.monotonic() - start
                self.log.write(line)
                lines.append((elapsed, line.rstrip("\n")))
                if watch and re.search(watch, line):
                    record["matched_after_seconds"] = elapsed
                    proc.terminate()
                    break
                if elapsed > limit_s:
                    record["error"] = f"stopped after {limit_s:.0f} s"
                    proc.kill()
                    break
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        record["seconds"] = time.monotonic() - start
        record["returncode"] = proc.returncode
        record["output_tail"] = [line for _, line in lines[-15:]]
        record["lines"] = lines if watch else None
        return self._add(record)

    def _add(self, record: dict) -> dict:
        self.summary["checks"].append(record)
        self.write()
        return record

    def write(self) -> None:
        self.log.flush()
        path = os.path.join(self.out, "gpu_checks.json")
        with open(path + ".tmp", "w") as f:
            json.dump(self.summary, f, indent=2)
        os.replace(path + ".tmp", path)


def download_wheels(directory: str) -> None:
    """pip-downloads WHEELS for CPython 3.12 on x86-64 Linux into `directory`."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms,
                    "-d", directory, *WHEELS], check=True)


def install_wheels(directory: str, env: dict) -> None:
    """Installs the wheels of `directory` into SITE and puts SITE on env's PYTHONPATH."""
    wheels = sorted(os.path.join(directory, w) for w in os.listdir(directory)
                    if w.endswith(".whl"))
    if not wheels:
        raise cli.UsageError(f"--wheels={directory}: no .whl file there")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--no-compile", "--no-cache-dir", "--upgrade", "--target", SITE, *wheels],
                   check=True)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, SITE, env.get("PYTHONPATH")]))


def _step_command(batch_size: int, dtype: str, num_items: int, json_path: str) -> list[str]:
    return [sys.executable, "launch/benchmark.py", *TAOBAO, f"--num_items={num_items}",
            f"--batch_size={batch_size}", f"--config.train.compute_dtype={dtype}",
            "--steps=30", "--warmup=3", "--pipeline_seconds=2", f"--json={json_path}"]


def _best(summary: dict, dtype: str) -> dict | None:
    """The fastest step check of `dtype` (its main figures), or None."""
    runs = [c["result"] for c in summary["checks"]
            if c.get("result") and c["name"].startswith(f"step {dtype}")]
    if not runs:
        return None
    best = max(runs, key=lambda r: r["examples_per_sec"])
    keys = ("batch_size", "examples_per_sec", "roofline_fraction_datasheet",
            "roofline_fraction", "roofline_bound", "compile_seconds", "peak_memory_bytes",
            "pipeline_examples_per_sec_per_host", "input_headroom")
    return {k: best.get(k) for k in keys}


@cli.tool
def main(argv: list[str] | None = None):
    args = cli.parse_flags(define_flags, argv, __doc__)
    if args.download_wheels:
        download_wheels(args.download_wheels)
        return
    if not args.out:
        raise cli.UsageError("--out is needed (or --download_wheels)")
    os.makedirs(args.out, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    if args.wheels:
        install_wheels(args.wheels, env)
    checks = Checks(args.out, args.budget_seconds, env)
    work = os.path.join("/tmp", f"sine_jax_gpu_checks_{os.getpid()}")
    os.makedirs(work, exist_ok=True)

    record = checks.run("environment", [sys.executable, "-c", _ENVIRONMENT], 60)
    if record.get("returncode") == 0:
        checks.summary["environment"] = json.loads(
            [line for line in record["output_tail"] if line.startswith("{")][-1])
    batch_sizes = [int(b) for b in args.batch_sizes]
    for dtype in ("bfloat16", "float32"):
        for batch_size in batch_sizes:
            path = os.path.join(work, f"step_{dtype}_{batch_size}.json")
            record = checks.run(f"step {dtype} batch {batch_size}",
                                _step_command(batch_size, dtype, args.num_items, path), 120)
            if os.path.exists(path):
                with open(path) as f:
                    record["result"] = json.load(f)
        checks.summary[f"best_{dtype}"] = _best(checks.summary, dtype)
        checks.write()
        if dtype == "bfloat16":  # the user-facing figures before the float32 sweep
            best = checks.summary["best_bfloat16"] or {"batch_size": batch_sizes[0]}
            record = checks.run(
                "time to the first step",
                [sys.executable, "-m", "sine_jax.main", *TAOBAO_ON_SYNTHETIC,
                 f"--config.train.batch_size={best['batch_size']}",
                 "--config.train.compute_dtype=bfloat16",
                 f"--workdir={os.path.join(work, 'first_step')}"],
                180, watch=r"compiled; the first step took")
            checks.summary["time_to_first_step_seconds"] = record.get("matched_after_seconds")
            path = os.path.join(work, "eval.json")
            record = checks.run(
                "evaluation over all items",
                [sys.executable, "launch/benchmark.py", *TAOBAO, f"--num_items={args.num_items}",
                 "--steps=2", "--warmup=1", "--pipeline_seconds=0",
                 f"--eval_users={args.eval_users}", "--config.eval.batch_size=4096",
                 f"--json={path}"], 150)
            if os.path.exists(path):
                with open(path) as f:
                    result = json.load(f)
                record["result"] = result
                checks.summary["eval_users_per_sec"] = result.get("eval_users_per_sec")
            checks.write()
    checks.write()
    print(json.dumps({k: v for k, v in checks.summary.items() if k != "checks"}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
