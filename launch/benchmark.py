"""Training-step throughput of sine_jax against the hardware's roofline.

Runs the real jitted train step (the one `sine_jax.main` trains with) on synthetic batches
already on the devices, with the shapes of a config: compiles it ahead of time (timed
apart), warms up, then times `--steps` steps with no host sync in between. Reports
steps/s, examples/s (total and per device), peak memory (the device's peak bytes in use; on
CPU the process's peak RSS), the step's FLOPs and bytes from XLA's cost analysis, the
collective traffic in the compiled program, and the roofline fraction

    roofline time = max(FLOPs / peak FLOP/s, bytes / bandwidth),  fraction = that / step time,

with the peak FLOP/s measured in the same run by a large f32 matmul and the bandwidth by a
large copy (on a GPU the datasheet figures are given too, at the peak of the compute
dtype). It also times the input pipeline alone, reading this host's rows of each batch as
training does, beside the examples/s per host the step consumes (`input_headroom`: how many
times faster this host can read batches than the step uses them).

    python launch/benchmark.py --config=configs/movielens.py --batch_size=1024 \
        --num_items=3706 --json=bench.json --config.loss.name=full_softmax
    python launch/benchmark.py --config=configs/taobao.py --num_items=4000000 --steps=50
    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python launch/benchmark.py --config=configs/movielens.py --mesh=data:4,model:2

`--steps=2 --warmup=1` makes it a smoke run; `--trace_dir=DIR` writes a profiler trace of
a few steps (TensorBoard / Perfetto); `--eval_users=N` also times the full-ranking
evaluation of N users over the M items (users/s).
"""

import json
import re
import resource
import time

from absl import flags
from ml_collections import config_flags

from sine_jax import cli, host_memory

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Global batch size (default: config's).")
_MESH = flags.DEFINE_string("mesh", None, "Mesh as data:D,model:M (default: the config's).")
_NUM_ITEMS = flags.DEFINE_integer("num_items", 3706, "Catalogue size M.")
_STEPS = flags.DEFINE_integer("steps", 50, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compiling.")
_JSON = flags.DEFINE_string("json", None, "Write the results here as JSON.")
_TRACE_DIR = flags.DEFINE_string("trace_dir", None, "Write a profiler trace of 3 steps here.")
_PIPELINE_SECONDS = flags.DEFINE_float(
    "pipeline_seconds", 3.0, "How long to time the input pipeline alone (0 = skip)."
)
_EVAL_USERS = flags.DEFINE_integer(
    "eval_users", 0, "Also time the full-ranking evaluation of this many users (0 = skip)."
)
flags.mark_flags_as_required(["config"])

# Datasheet peaks (dense, no sparsity) by device kind (a substring of `device_kind`; the SXM
# H100 reports "NVIDIA H100 80GB HBM3"): f32 FLOP/s with TF32 tensor cores (XLA's default f32
# matmul precision on these GPUs), f32 FLOP/s on the CUDA cores (full-precision f32), bf16
# tensor-core FLOP/s, memory bytes/s.
DATASHEET = {
    "H200": {"tf32_flops": 494.7e12, "f32_flops": 66.9e12, "bf16_flops": 989.4e12,
             "bandwidth": 4.8e12},
    "H100 80GB HBM3": {"tf32_flops": 494.7e12, "f32_flops": 66.9e12, "bf16_flops": 989.4e12,
                       "bandwidth": 3.35e12},
    "H100 PCIe": {"tf32_flops": 378.0e12, "f32_flops": 51.2e12, "bf16_flops": 756.0e12,
                  "bandwidth": 2.0e12},
}
_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2, "s8": 1, "u8": 1,
                "pred": 1, "f64": 8, "s64": 8, "u64": 8}  # fmt: skip


def datasheet(device_kind: str, compute_dtype: str) -> dict[str, float] | None:
    """The DATASHEET entry of `device_kind` with `peak_flops`, the peak of the compute dtype
    (bf16 tensor cores for bfloat16, TF32 for float32); None for another device."""
    for name, sheet in DATASHEET.items():
        if name in device_kind:
            dtype_peak = "bf16_flops" if compute_dtype == "bfloat16" else "tf32_flops"
            return {**sheet, "peak_flops": sheet[dtype_peak]}
    return None


def parse_mesh(text: str | None) -> dict[str, int]:
    """'data:4,model:2' -> {'data': 4, 'model': 2}; axes left out keep the config's value."""
    if not text:
        return {}
    sizes = {}
    for part in text.split(","):
        name, _, size = part.partition(":")
        if name not in ("data", "model") or not size.lstrip("-").isdigit():
            raise cli.UsageError(f"--mesh={text!r}: expected data:D,model:M (e.g. data:4,model:2)")
        sizes[name] = int(size)
    return sizes


def collective_bytes(hlo_text: str) -> dict[str, int]:
    """Bytes produced per step by each kind of collective in a compiled HLO module."""
    totals = dict.fromkeys(_COLLECTIVES, 0)
    pattern = re.compile(r"=\s*(.+?)\s+(" + "|".join(_COLLECTIVES) + r")(?:-start)?\(")
    for match in pattern.finditer(hlo_text):
        for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", match.group(1)):
            if dtype in _DTYPE_BYTES:
                size = 1
                for d in filter(None, dims.split(",")):
                    size *= int(d)
                totals[match.group(2)] += size * _DTYPE_BYTES[dtype]
    return {k: v for k, v in totals.items() if v}


def _time(fn, *args, repeats: int) -> float:
    """Seconds per call of a jitted fn (after one warm-up call)."""
    import jax

    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def measure_hardware(device) -> dict[str, float]:
    """Peak f32 matmul FLOP/s and copy bandwidth (bytes read + written per second)."""
    import jax
    import jax.numpy as jnp

    on_gpu = device.platform == "gpu"
    n = 8192 if on_gpu else 2048
    a = jax.device_put(jnp.ones((n, n), jnp.float32) / n, device)
    matmul = jax.jit(lambda x: x @ x)
    flops = 2 * n**3 / _time(matmul, a, repeats=20 if on_gpu else 5)
    size = (1 << 30) if on_gpu else (1 << 28)  # bytes
    x = jax.device_put(jnp.ones((size // 4,), jnp.float32), device)
    # In place (donated): reads and writes every byte once, with no allocation in the way
    # (a fresh 256 MiB output on this CPU costs page faults, not memory traffic).
    copy = jax.jit(lambda y: y * 1.0001, donate_argnums=0)
    repeats = 20 if on_gpu else 5
    x = copy(x)
    jax.block_until_ready(x)
    start = time.perf_counter()
    for _ in range(repeats):
        x = copy(x)
    jax.block_until_ready(x)
    bandwidth = 2 * size * repeats / (time.perf_counter() - start)
    return {"peak_flops_per_sec": flops, "bandwidth_bytes_per_sec": bandwidth}


def peak_memory_bytes(device) -> int:
    """The device's peak bytes in use, or on CPU the process's peak resident set."""
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def synthetic_batches(config, num_items: int, sharding, count: int = 8) -> list[dict]:
    """`count` batches of uniform random ids in 1..M, placed on the devices."""
    import jax
    import numpy as np

    rng = np.random.default_rng(0)
    shape = (config.train.batch_size, config.model.max_seq_len)
    return [
        {
            "history": jax.device_put(rng.integers(1, num_items + 1, shape, np.int32), sharding),
            "target": jax.device_put(rng.integers(1, num_items + 1, shape[0], np.int32), sharding),
        }
        for _ in range(count)
    ]


def pipeline_examples_per_sec(config, seconds: float, rows: tuple[int, int]) -> float:
    """Examples/s of the grain training pipeline alone (synthetic data, the config's B and n),
    reading `rows` of each global batch (this host's share)."""
    import tempfile

    from configs import synthetic
    from sine_jax.data import dataset as dataset_lib
    from sine_jax.data import pipeline

    data_config = synthetic.get_config().data
    with tempfile.TemporaryDirectory() as cache:
        data = dataset_lib.load_dataset(data_config, cache)
    iterator = iter(
        pipeline.make_train_dataset(
            data, max_seq_len=config.model.max_seq_len, batch_size=config.train.batch_size,
            seed=0, rows=rows,
        )
    )
    next(iterator)  # starts the prefetch threads
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        next(iterator)
        count += 1
    return count * (rows[1] - rows[0]) / (time.perf_counter() - start)


def eval_throughput(config, model, params, mesh, num_items: int, num_users: int) -> dict:
    """Full-ranking evaluation as validation runs it: `num_users` random users (history,
    target, the history excluded) ranked against all M items, eval.batch_size users at a
    time; the first batch (which compiles) is timed apart."""
    import numpy as np

    from sine_jax import evaluate

    rank_fn = evaluate.make_rank_fn(
        model.queries_and_table, mesh, mask_history=config.eval.mask_history,
        chunk_size=config.eval.item_chunk_size, num_items=num_items,
    )
    rng = np.random.default_rng(1)
    batch = config.eval.batch_size

    def users(count):
        history = rng.integers(1, num_items + 1, (count, config.model.max_seq_len), np.int32)
        target = rng.integers(1, num_items + 1, count, np.int32)
        return {"history": history, "target": target, "exclude": history}

    def seconds(arrays):
        start = time.perf_counter()
        evaluate.compute_ranks(rank_fn, params, arrays, batch_size=batch, mesh=mesh)
        return time.perf_counter() - start

    first = seconds(users(batch))
    timed = seconds(users(num_users))
    return {"eval_users_per_sec": num_users / timed, "eval_users": num_users,
            "eval_batch_size": batch, "eval_first_batch_seconds": first}


def run_benchmark(config, *, num_items: int, steps: int, warmup: int,
                  trace_dir: str | None = None, pipeline_seconds: float = 0.0,
                  eval_users: int = 0) -> dict:
    """Times the train step of `config`; returns the results dict (see the module docstring)."""
    import jax

    from sine_jax import config_checks, sharding, step

    config_checks.check_config(config)
    mesh = sharding.make_mesh(config)
    model = step.split_model(config, num_items, mesh)
    context, state = step.create_train_state(config, model, total_steps=10**6)
    step_fn = step.make_step_fn(context, config)
    batches = synthetic_batches(config, num_items, sharding.batch_sharding(mesh))

    start = time.perf_counter()
    compiled = step_fn.lower(state, batches[0]).compile()
    compile_seconds = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops, bytes_accessed = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))

    compiles = []  # compilations while stepping: there must be none
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kw: compiles.append(event)
        if event == "/jax/core/compile/backend_compile_duration" else None
    )
    for i in range(warmup):
        state, metrics = compiled(state, batches[i % len(batches)])
    jax.block_until_ready(state)
    start = time.perf_counter()
    for i in range(steps):
        state, metrics = compiled(state, batches[i % len(batches)])
    jax.block_until_ready((state, metrics))
    step_seconds = (time.perf_counter() - start) / steps
    if trace_dir:
        with jax.profiler.trace(trace_dir):
            for i in range(3):
                state, metrics = compiled(state, batches[i % len(batches)])
            jax.block_until_ready(state)
    num_compiles = 1 + len(compiles)  # the ahead-of-time one + any while stepping

    device = jax.devices()[0]
    hardware = measure_hardware(device)
    roofline_seconds = max(
        flops / hardware["peak_flops_per_sec"], bytes_accessed / hardware["bandwidth_bytes_per_sec"]
    )
    batch_size = config.train.batch_size
    num_devices = mesh.devices.size
    results = {
        "examples_per_sec": batch_size / step_seconds,
        "examples_per_sec_per_device": batch_size / step_seconds / num_devices,
        "steps_per_sec": 1.0 / step_seconds,
        "step_seconds": step_seconds,
        "compile_seconds": compile_seconds,
        "num_compiles": num_compiles,
        "flops_per_step": flops,
        "bytes_per_step": bytes_accessed,
        "achieved_flops_per_sec": flops / step_seconds,
        **hardware,
        "roofline_seconds": roofline_seconds,
        "roofline_fraction": roofline_seconds / step_seconds,
        "roofline_bound": "compute" if flops / hardware["peak_flops_per_sec"]
        >= bytes_accessed / hardware["bandwidth_bytes_per_sec"] else "memory",
        "collective_bytes_per_step": collective_bytes(compiled.as_text()),
        "peak_memory_bytes": peak_memory_bytes(device),
        "loss": float(metrics["loss"]),
        "devices": num_devices,
        "device_kind": device.device_kind,
        "platform": device.platform,
        "mesh": dict(mesh.shape),
        "batch_size": batch_size,
        "num_items": num_items,
        "table_rows": model.table_rows,
        "sparse_item_updates": context.sparse,
        "loss_name": config.loss.name,
        "compute_dtype": config.train.compute_dtype,
        "shapes": {
            "embed_dim": config.model.embed_dim,
            "max_seq_len": config.model.max_seq_len,
            "num_interests": config.model.num_interests,
            "num_prototypes": config.model.num_prototypes,
        },
        "steps": steps,
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    sheet = datasheet(device.device_kind, config.train.compute_dtype)
    if sheet is not None:
        results["datasheet"] = sheet
        results["roofline_fraction_datasheet"] = max(
            flops / sheet["peak_flops"], bytes_accessed / sheet["bandwidth"]
        ) / step_seconds
    if pipeline_seconds > 0:
        rows = sharding.local_rows(mesh, batch_size)
        share = (rows[1] - rows[0]) / batch_size  # of each batch, read by this host
        results["pipeline_examples_per_sec_per_host"] = pipeline_examples_per_sec(
            config, pipeline_seconds, rows)
        results["step_examples_per_sec_per_host"] = results["examples_per_sec"] * share
        results["input_headroom"] = (results["pipeline_examples_per_sec_per_host"]
                                     / results["step_examples_per_sec_per_host"])
    if eval_users > 0:
        results.update(eval_throughput(config, model, state.params, mesh, num_items, eval_users))
    return results


def format_table(results: dict) -> str:
    """A Markdown table of the main figures."""
    rows = [
        ("examples/s", f"{results['examples_per_sec']:,.0f}"),
        ("examples/s per device", f"{results['examples_per_sec_per_device']:,.0f}"),
        ("steps/s", f"{results['steps_per_sec']:.2f}"),
        ("compile (s)", f"{results['compile_seconds']:.1f}"),
        ("compiles", str(results["num_compiles"])),
        ("GFLOP / step", f"{results['flops_per_step'] / 1e9:.2f}"),
        ("GB / step (cost analysis)", f"{results['bytes_per_step'] / 1e9:.3f}"),
        ("achieved GFLOP/s", f"{results['achieved_flops_per_sec'] / 1e9:.1f}"),
        ("peak GFLOP/s (matmul)", f"{results['peak_flops_per_sec'] / 1e9:.1f}"),
        ("bandwidth GB/s (copy)", f"{results['bandwidth_bytes_per_sec'] / 1e9:.1f}"),
        ("roofline fraction", f"{results['roofline_fraction']:.2f} "
                              f"({results['roofline_bound']}-bound)"),
        ("peak memory (GiB)", f"{results['peak_memory_bytes'] / 2**30:.2f}"),
        ("collective bytes / step", json.dumps(results["collective_bytes_per_step"])),
    ]  # fmt: skip
    if "pipeline_examples_per_sec_per_host" in results:
        rows += [
            ("step examples/s per host", f"{results['step_examples_per_sec_per_host']:,.0f}"),
            ("input pipeline examples/s per host",
             f"{results['pipeline_examples_per_sec_per_host']:,.0f}"),
            ("input headroom (pipeline / step)", f"{results['input_headroom']:.1f}x"),
        ]
    if "eval_users_per_sec" in results:
        rows.append((f"evaluation users/s (full ranking, {results['num_items']:,} items)",
                     f"{results['eval_users_per_sec']:,.0f}"))
    if "roofline_fraction_datasheet" in results:
        rows.append(("roofline fraction (datasheet)",
                     f"{results['roofline_fraction_datasheet']:.2f}"))
    head = (
        f"{results['device_kind']} x{results['devices']} mesh {results['mesh']}, batch "
        f"{results['batch_size']}, {results['num_items']:,} items, {results['loss_name']}, "
        f"{results['compute_dtype']}, sparse item updates {results['sparse_item_updates']}"
    )
    lines = [head, "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    host_memory.keep_freed_memory_in_heap()
    config = _CONFIG.value
    with config.unlocked():
        if _BATCH_SIZE.value:
            config.train.batch_size = _BATCH_SIZE.value
        for axis, size in parse_mesh(_MESH.value).items():
            config.mesh[axis] = size
    results = run_benchmark(
        config, num_items=_NUM_ITEMS.value, steps=_STEPS.value, warmup=_WARMUP.value,
        trace_dir=_TRACE_DIR.value, pipeline_seconds=_PIPELINE_SECONDS.value,
        eval_users=_EVAL_USERS.value,
    )
    print(format_table(results))
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)
            f.write("\n")


if __name__ == "__main__":
    cli.run_app(main)
