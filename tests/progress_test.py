"""The training loop's progress report (sine_jax/progress.py), on a fake clock."""

import pytest

from sine_jax import progress


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_durations():
    assert [progress.duration(s) for s in (0, 44.6, 60, 725, 3600, 10_980)] == [
        "0s", "45s", "1m00s", "12m05s", "1h00m", "3h03m"]


def test_throughput_leaves_out_compilation_and_validation_and_is_smoothed():
    clock = Clock()
    timing = progress.Progress(total_steps=1000, batch_size=10, eval_every=500, start_step=0,
                               clock=clock)
    clock.now += 30.0  # the first step compiles
    assert timing.first_step_done(1) == 30.0
    assert timing.rate is None and timing.seconds_left(1) is None
    clock.now += 9.9  # 99 steps of 0.1 s
    assert timing.measure(100) == pytest.approx(100.0)  # 990 examples / 9.9 s
    clock.now += 10.0  # 100 steps, then a validation of 7 s
    with timing.excluded():
        clock.now += 7.0
    assert timing.measure(200) == pytest.approx(100.0)
    clock.now += 5.0  # 100 steps twice as fast: the average moves by SMOOTHING only
    assert timing.measure(300) == pytest.approx(0.3 * 200 + 0.7 * 100)
    assert timing.eval_seconds == 7.0


def test_time_left_is_the_budget_at_the_smoothed_rate_plus_validations():
    clock = Clock()
    timing = progress.Progress(total_steps=1000, batch_size=10, eval_every=300, start_step=0,
                               clock=clock)
    timing.first_step_done(0)
    clock.now += 20.0
    timing.measure(200)  # 100 examples/s: 10 steps/s
    # 800 steps (80 s) and the validations at 300, 600, 900 and 1000, not yet timed.
    assert timing.seconds_left(200) == pytest.approx(80.0)
    assert timing.line(200) == ("100 examples/s, 20s elapsed, at most 1m20s of training left "
                                "+ 4 validations")
    with timing.excluded():
        clock.now += 3.0
    assert timing.seconds_left(300) == pytest.approx(70.0 + 3 * 3.0)
    assert timing.line(300) == "100 examples/s, 23s elapsed, at most 1m19s left"
    assert timing.seconds_left(1000) == 0.0


def test_a_resumed_loop_counts_from_its_start_step():
    clock = Clock()
    timing = progress.Progress(total_steps=1000, batch_size=10, eval_every=1000,
                               start_step=900, clock=clock)
    timing.first_step_done(901)
    clock.now += 9.9
    assert timing.measure(1000) == pytest.approx(100.0)
    assert timing.line(1000) == "100 examples/s, 10s elapsed, at most 0s left"


def test_the_metrics_table_orders_metrics_by_name_then_cut_off():
    results = {"valid": {"HR@100": 0.5, "HR@10": 0.25, "NDCG@10": 0.125},
               "test": {"HR@100": 0.75, "HR@10": 0.2, "NDCG@10": 0.1}}
    assert progress.metrics_table(results).splitlines() == [
        "metric    valid    test",
        "HR@10    0.2500  0.2000",
        "HR@100   0.5000  0.7500",
        "NDCG@10  0.1250  0.1000",
    ]
