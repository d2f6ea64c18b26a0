"""launch/benchmark.py in its tiny mode, and its parsers."""

import pytest

from configs import synthetic
from launch import benchmark
from sine_jax import cli


def _tiny_config(**mesh):
    config = synthetic.get_config()
    config.model.embed_dim = 16
    config.model.num_prototypes = 8
    config.model.max_seq_len = 5
    config.train.batch_size = 16
    config.mesh.data, config.mesh.model = mesh.get("data", -1), mesh.get("model", 1)
    return config


def test_tiny_benchmark_reports_every_field_and_compiles_once():
    results = benchmark.run_benchmark(_tiny_config(data=4, model=2), num_items=2000, steps=2,
                                      warmup=1, pipeline_seconds=0.2, eval_users=40)
    for key in ("examples_per_sec", "steps_per_sec", "compile_seconds", "num_compiles",
                "flops_per_step", "bytes_per_step", "roofline_fraction", "peak_memory_bytes",
                "devices", "mesh", "batch_size", "num_items"):
        assert key in results, key
    assert results["num_compiles"] == 1
    assert results["mesh"] == {"data": 4, "model": 2} and results["devices"] == 8
    assert results["flops_per_step"] > 0 and results["examples_per_sec"] > 0
    # The roofline time (the step's FLOPs at peak FLOP/s, or its bytes at peak bandwidth,
    # whichever is longer) is a lower bound of the step time: a fraction in (0, 1].
    roofline = max(results["flops_per_step"] / results["peak_flops_per_sec"],
                   results["bytes_per_step"] / results["bandwidth_bytes_per_sec"])
    assert results["roofline_fraction"] == pytest.approx(roofline / results["step_seconds"])
    assert 0 < results["roofline_fraction"] <= 1
    assert results["sparse_item_updates"]  # 2,000 items > 8 x the rows a step touches
    # One process holds every row of a batch: the step's examples/s per host are all of them.
    assert results["step_examples_per_sec_per_host"] == results["examples_per_sec"]
    assert results["input_headroom"] == pytest.approx(
        results["pipeline_examples_per_sec_per_host"] / results["examples_per_sec"])
    assert results["eval_users"] == 40 and results["eval_users_per_sec"] > 0
    table = benchmark.format_table(results)
    assert "input pipeline examples/s per host" in table and "evaluation users/s" in table


def test_datasheet_peak_follows_the_device_and_the_compute_dtype():
    h200 = benchmark.datasheet("NVIDIA H200", "bfloat16")
    assert h200["peak_flops"] == h200["bf16_flops"] == 989.4e12 and h200["bandwidth"] == 4.8e12
    sxm = benchmark.datasheet("NVIDIA H100 80GB HBM3", "float32")
    assert sxm["peak_flops"] == sxm["tf32_flops"] == 494.7e12 and sxm["bandwidth"] == 3.35e12
    assert benchmark.datasheet("NVIDIA H100 PCIe", "bfloat16")["peak_flops"] == 756.0e12
    assert benchmark.datasheet("cpu", "float32") is None


def test_collective_bytes_reads_the_compiled_module():
    hlo = """
  %all-reduce.1 = f32[128,16]{1,0} all-reduce(f32[128,16]{1,0} %x), replica_groups={}
  %ag = (f32[8]{0}, s32[4]{0}) all-gather-start(f32[2]{0} %y), dimensions={0}
  %dot.2 = f32[4,4]{1,0} dot(f32[4,2]{1,0} %a, f32[2,4]{1,0} %b)
"""
    assert benchmark.collective_bytes(hlo) == {"all-reduce": 128 * 16 * 4, "all-gather": 48}


def test_mesh_flag():
    assert benchmark.parse_mesh("data:4,model:2") == {"data": 4, "model": 2}
    assert benchmark.parse_mesh(None) == {}
    with pytest.raises(cli.UsageError, match="data:D,model:M"):
        benchmark.parse_mesh("rows:2")
