"""launch/compare_recbole.py without torch or RecBole: medians, rows, table, errors."""

import pytest

from launch import compare_recbole as cr


def fixed_records() -> list[dict]:
    """Two repeats at B=128 and 1024 with round numbers (RecBole 100 or 200 examples/s)."""
    per_repeat = {cr.JAX_FULL: 400.0, cr.JAX_SAMPLED: 800.0, cr.RECBOLE: 100.0,
                  cr.RECBOLE_ANOMALY: 50.0, cr.RECBOLE_NO_FTZ: 90.0}
    records = []
    for repeat, scale in ((0, 1.0), (1, 3.0)):
        for batch_size in (128, 1024):
            for name, value in per_repeat.items():
                records.append({"repeat": repeat, "batch_size": batch_size, "name": name,
                                "examples_per_sec": value * scale * batch_size / 128})
    return records


def test_rows_are_medians_and_ratios():
    rows = cr.table_rows(cr.medians(fixed_records()), [128, 1024])
    assert [(row["sine_jax_loss"], row["batch_size"]) for row in rows] == [
        ("full_softmax", 128), ("full_softmax", 1024),
        ("sampled_softmax", 128), ("sampled_softmax", 1024)]
    full_128 = rows[0]
    assert full_128["sine_jax_examples_per_sec"] == 800.0  # median of 400 and 1200
    assert full_128["recbole_examples_per_sec"] == 200.0
    assert full_128["ratio"] == 4.0
    assert full_128["recbole_examples_per_sec_anomaly_detection_on"] == 100.0
    assert full_128["recbole_examples_per_sec_no_flush_denormal"] == 180.0
    assert rows[3]["ratio"] == 8.0
    assert "recbole_examples_per_sec_anomaly_detection_on" not in rows[3]


def test_summary_takes_the_full_softmax_row_of_the_main_batch_size():
    rows = cr.table_rows(cr.medians(fixed_records()), [128, 1024])
    top = cr.summary(rows, 1024)
    assert top["batch_size"] == 1024
    assert top["sine_jax_examples_per_sec"] == 6400.0
    assert top["ratio"] == 4.0


def test_markdown_table():
    rows = cr.table_rows(cr.medians(fixed_records()), [128, 1024])
    lines = cr.markdown_table(rows, steps=20, repeats=2).splitlines()
    assert lines[0].startswith("| sine_jax loss | batch | sine_jax ex/s | RecBole ex/s | ratio")
    assert lines[2] == "| full softmax | 128 | 800 | 200 | 4.00x | 100 | 180 |"
    assert lines[5] == "| sampled softmax | 1024 | 12,800 | 1,600 | 8.00x |  |  |"
    assert "Medians of 2 repeats, 20 timed steps each." in lines[-1]


@pytest.mark.parametrize("python, message", [
    (None, "--recbole_python is required"),
    ("/no/such/python", "is not an interpreter"),
])
def test_missing_recbole_python_is_one_line_with_the_recipe(python, message):
    with pytest.raises(cr.CompareError) as error:
        cr.check_recbole_python(python)
    assert message in str(error.value)
    assert "pip install torch==2.13.0 recbole==1.2.1" in str(error.value)
    assert "\n" not in str(error.value)
