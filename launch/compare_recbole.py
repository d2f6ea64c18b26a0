"""Training-step throughput of sine_jax's SINE against RecBole 1.2.1's SINE on this CPU, in one run.

  python launch/compare_recbole.py --recbole_python=/work/recbole-venv/bin/python \
      --steps=10 --repeats=2 --json=runs/compare_recbole.json

RecBole needs numpy<2 and jax numpy>=2, so RecBole lives in its own venv (outside the repo)
and runs as a subprocess:

  python -m venv /work/recbole-venv
  /work/recbole-venv/bin/pip install torch==2.13.0 recbole==1.2.1 'numpy<2' 'pandas<3' \
      'setuptools<81'

Shapes: D=128, n=20, K=4, L=50, 3,706 items (ML-1M), batch 128 and 1024 (or --batch_size).
Like for like, the main row uses the full softmax over the catalogue on both sides (RecBole's
default loss_type=CE; sine_jax --config.loss.name=full_softmax); a second row gives sine_jax
with its default sampled softmax (configs/movielens.py) against the same RecBole figure.
sine_jax's loss also adds lambda * L_c on the [L, D] prototypes (RecBole's CE loss does not).

One process at a time (two on the 2 cores halve each other), alternating sides; per repeat
and batch size:
  sine_jax, full softmax     launch/benchmark.py --config.loss.name=full_softmax
  RecBole, flush-to-zero on  launch/recbole_step.py, anomaly detection off (the main RecBole
                             figure) and on (as importing RecBole's sine.py leaves it)
  sine_jax, sampled softmax  launch/benchmark.py
  RecBole, flush-to-zero off anomaly detection off
(benchmark.py runs with --pipeline_seconds=0: both sides time steps on ready batches.)
Figures are medians over --repeats; ratio = sine_jax examples/s / RecBole examples/s (RecBole
with anomaly detection off and flush-to-zero on). Prints a Markdown table; --json also writes
the figures, every measurement, the versions of both sides, the CPU model and thread count.
Each measurement carries the 1-minute load average just after it (its own process counts, so
about 2 on a quiet 2-core machine; more means something else shared the cores).
"""

import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import types

from absl import flags

from sine_jax import cli
from sine_jax.errors import SineError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARK = os.path.join(REPO, "launch", "benchmark.py")
RECBOLE_STEP = os.path.join(REPO, "launch", "recbole_step.py")
NUM_ITEMS = 3706
BATCH_SIZES = (128, 1024)
VENV_RECIPE = ("python -m venv /work/recbole-venv && /work/recbole-venv/bin/pip install "
               "torch==2.13.0 recbole==1.2.1 'numpy<2' 'pandas<3' 'setuptools<81'")

# Measurement names; the report gives each one's median over the repeats.
JAX_FULL = "sine_jax_full_softmax"
JAX_SAMPLED = "sine_jax_sampled_softmax"
RECBOLE = "recbole"  # anomaly detection off, flush-to-zero on
RECBOLE_ANOMALY = "recbole_anomaly_detection_on"  # flush-to-zero on
RECBOLE_NO_FTZ = "recbole_no_flush_denormal"  # anomaly detection off


class CompareError(SineError):
    """A reason the comparison cannot run or finish: the message is one line."""


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_string("recbole_python", None, "Python of the RecBole venv.",
                        flag_values=flag_values)
    flags.DEFINE_integer("batch_size", None, "One batch size (default: 128 and 1024).",
                         flag_values=flag_values)
    flags.DEFINE_integer("steps", 10, "Timed steps per measurement.", flag_values=flag_values)
    flags.DEFINE_integer("repeats", 2, "Alternating rounds; medians.", flag_values=flag_values)
    flags.DEFINE_string("json", None, "Also write the results here.", flag_values=flag_values)


def check_recbole_python(python: str | None) -> None:
    """Raises CompareError unless `python` imports torch and recbole."""
    if not python:
        raise CompareError(f"--recbole_python is required; create the venv with: {VENV_RECIPE}")
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise CompareError(f"--recbole_python={python} is not an interpreter; create the venv "
                           f"with: {VENV_RECIPE}")
    check = subprocess.run([python, "-c", "import torch, recbole"], capture_output=True,
                           text=True, env=recbole_env(), check=False)
    if check.returncode != 0:
        error = (check.stderr.strip().splitlines() or ["no output"])[-1]
        raise CompareError(f"--recbole_python={python} cannot import torch and recbole "
                           f"({error}); create the venv with: {VENV_RECIPE}")


def recbole_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    return env


def run_process(command: list[str], env: dict[str, str]) -> str:
    """Runs one measurement; its stdout, or CompareError (its stderr goes to ours first)."""
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO,
                          check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise CompareError(f"exit code {done.returncode}: {' '.join(command)}")
    return done.stdout


def sine_jax_run(batch_size: int, steps: int, full_softmax: bool, tmp_dir: str) -> dict:
    """launch/benchmark.py's JSON for one batch size and loss."""
    out = os.path.join(tmp_dir, "benchmark.json")
    command = [sys.executable, BENCHMARK, "--config=configs/movielens.py",
               f"--batch_size={batch_size}", f"--num_items={NUM_ITEMS}", f"--steps={steps}",
               f"--json={out}", "--pipeline_seconds=0"]
    if full_softmax:
        command.append("--config.loss.name=full_softmax")
    run_process(command, dict(os.environ))
    with open(out) as f:
        result = json.load(f)
    loss = "full_softmax" if full_softmax else "sampled_softmax"
    if result.get("loss_name", loss) != loss:
        raise CompareError(f"benchmark.py measured {result['loss_name']}, expected {loss}")
    return result


def recbole_run(python: str, batch_size: int, steps: int, flush_denormal: bool,
                anomaly_modes: str) -> dict:
    """launch/recbole_step.py's JSON line for one batch size and flush-to-zero setting."""
    command = [python, RECBOLE_STEP, f"--batch_size={batch_size}", f"--num_items={NUM_ITEMS}",
               f"--steps={steps}", f"--flush_denormal={str(flush_denormal).lower()}",
               f"--anomaly_detection={anomaly_modes}"]
    return json.loads(run_process(command, recbole_env()).strip().splitlines()[-1])


def measure_round(args: types.SimpleNamespace, repeat: int, batch_size: int,
                  tmp_dir: str) -> list[dict]:
    """One alternating round (sine_jax, RecBole, sine_jax, RecBole) at one batch size."""
    records = []

    def record(name: str, examples_per_sec: float, output: dict) -> None:
        print(f"[repeat {repeat + 1}/{args.repeats}] B={batch_size} {name}: "
              f"{examples_per_sec:.0f} examples/s", file=sys.stderr, flush=True)
        records.append({"repeat": repeat, "batch_size": batch_size, "name": name,
                        "examples_per_sec": examples_per_sec,
                        "load_average_1min": os.getloadavg()[0], "output": output})

    full = sine_jax_run(batch_size, args.steps, True, tmp_dir)
    record(JAX_FULL, full["examples_per_sec"], full)
    ftz = recbole_run(args.recbole_python, batch_size, args.steps, True, "off,on")
    record(RECBOLE, ftz["anomaly_detection"]["off"]["examples_per_sec"], ftz)
    record(RECBOLE_ANOMALY, ftz["anomaly_detection"]["on"]["examples_per_sec"], ftz)
    sampled = sine_jax_run(batch_size, args.steps, False, tmp_dir)
    record(JAX_SAMPLED, sampled["examples_per_sec"], sampled)
    no_ftz = recbole_run(args.recbole_python, batch_size, args.steps, False, "off")
    record(RECBOLE_NO_FTZ, no_ftz["anomaly_detection"]["off"]["examples_per_sec"], no_ftz)
    return records


def medians(records: list[dict]) -> dict[tuple[int, str], float]:
    """(batch size, measurement name) -> median examples/s over the repeats."""
    groups: dict[tuple[int, str], list[float]] = {}
    for rec in records:
        groups.setdefault((rec["batch_size"], rec["name"]), []).append(rec["examples_per_sec"])
    return {key: statistics.median(values) for key, values in groups.items()}


def table_rows(median: dict[tuple[int, str], float], batch_sizes: list[int]) -> list[dict]:
    """Full-softmax rows (one per batch size), then sampled-softmax rows."""
    rows = []
    for loss, jax_name in (("full_softmax", JAX_FULL), ("sampled_softmax", JAX_SAMPLED)):
        for batch_size in batch_sizes:
            recbole = median[batch_size, RECBOLE]
            row = {
                "sine_jax_loss": loss,
                "batch_size": batch_size,
                "sine_jax_examples_per_sec": median[batch_size, jax_name],
                "recbole_examples_per_sec": recbole,
                "ratio": median[batch_size, jax_name] / recbole,
            }
            if loss == "full_softmax":
                row["recbole_examples_per_sec_anomaly_detection_on"] = median[
                    batch_size, RECBOLE_ANOMALY]
                row["recbole_examples_per_sec_no_flush_denormal"] = median[
                    batch_size, RECBOLE_NO_FTZ]
            rows.append(row)
    return rows


def markdown_table(rows: list[dict], steps: int, repeats: int) -> str:
    def fmt(value: float | None) -> str:
        return "" if value is None else f"{value:,.0f}"

    lines = [
        ("| sine_jax loss | batch | sine_jax ex/s | RecBole ex/s | ratio "
         "| RecBole, anomaly detection on | RecBole, no flush-to-zero |"),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['sine_jax_loss'].replace('_', ' ')} | {row['batch_size']} "
            f"| {fmt(row['sine_jax_examples_per_sec'])} | {fmt(row['recbole_examples_per_sec'])} "
            f"| {row['ratio']:.2f}x "
            f"| {fmt(row.get('recbole_examples_per_sec_anomaly_detection_on'))} "
            f"| {fmt(row.get('recbole_examples_per_sec_no_flush_denormal'))} |")
    lines.append("")
    lines.append(f"RecBole: loss_type=CE (full softmax), anomaly detection off, flush-to-zero on, "
                 f"unless the column says otherwise. Medians of {repeats} repeats, "
                 f"{steps} timed steps each.")
    return "\n".join(lines)


def summary(rows: list[dict], main_batch_size: int) -> dict:
    """The main like-for-like row's figures at the top level of the JSON."""
    main = next(row for row in rows
                if row["sine_jax_loss"] == "full_softmax" and row["batch_size"] == main_batch_size)
    keys = ("batch_size", "sine_jax_examples_per_sec", "recbole_examples_per_sec", "ratio",
            "recbole_examples_per_sec_anomaly_detection_on",
            "recbole_examples_per_sec_no_flush_denormal")
    return {key: main[key] for key in keys}


def sine_jax_versions() -> dict:
    versions = {name: importlib.metadata.version(name) for name in ("jax", "jaxlib", "numpy",
                                                                    "flax")}
    versions["git_commit"] = git("rev-parse", "HEAD")
    versions["git_dirty"] = bool(git("status", "--porcelain"))
    return versions


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def report(args: types.SimpleNamespace, batch_sizes: list[int], records: list[dict]) -> dict:
    rows = table_rows(medians(records), batch_sizes)
    recbole_output = next(rec["output"] for rec in records if rec["name"] == RECBOLE)
    no_ftz_output = next(rec["output"] for rec in records if rec["name"] == RECBOLE_NO_FTZ)
    return {
        **summary(rows, batch_sizes[0]),
        "rows": rows,
        "num_items": NUM_ITEMS,
        "steps": args.steps,
        "repeats": args.repeats,
        "versions": {"sine_jax": sine_jax_versions(), "recbole": recbole_output["versions"]},
        "cpu": {"model": cpu_model(), "logical_cpus": os.cpu_count(),
                "usable_cpus": len(os.sched_getaffinity(0)),
                "torch_threads": recbole_output["threads"]},
        "denormal_products_flushed": {"flush_denormal_on": recbole_output[
            "denormal_products_flushed"], "flush_denormal_off": no_ftz_output[
            "denormal_products_flushed"]},
        "measurements": records,
    }


@cli.tool
def main(argv: list[str] | None = None) -> int:
    args = cli.parse_flags(define_flags, argv, __doc__)
    check_recbole_python(args.recbole_python)
    if not os.path.isfile(BENCHMARK):
        raise CompareError(f"{BENCHMARK} not found (the sine_jax side)")
    batch_sizes = [args.batch_size] if args.batch_size else list(BATCH_SIZES)
    records = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        for repeat in range(args.repeats):
            for batch_size in batch_sizes:
                records += measure_round(args, repeat, batch_size, tmp_dir)
    result = report(args, batch_sizes, records)
    print(markdown_table(result["rows"], args.steps, args.repeats))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
