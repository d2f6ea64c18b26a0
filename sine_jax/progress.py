"""What a training run tells its user while it runs and when it ends: a line before the first
step compiles, progress lines with the elapsed time, the most time left (to the last step of
the epoch budget; early stopping may end the run sooner) and a smoothed examples/s, and at the
end a short table of the metrics.

Throughput is measured over training only: the first step (compilation), validations and the
checkpoints saved with them are left out, and successive measurements are smoothed by an
exponential moving average, so one slow interval (a periodic checkpoint, another process on
the machine) does not swing the number.
"""

import contextlib
import re
import time
from collections.abc import Callable, Iterator

# Weight of the newest interval in the smoothed examples/s.
SMOOTHING = 0.3


def duration(seconds: float) -> str:
    """'45s', '12m05s', '3h02m'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


class Progress:
    """Timing of one `train_loop` call from `start_step` to at most `total_steps`.

    The loop calls `first_step_done` once the first step has run (compiled), `excluded()`
    around validations, and `measure(step)` at each log step; `line(step)` is the timing part
    of a progress line.
    """

    def __init__(self, total_steps: int, batch_size: int, eval_every: int, start_step: int,
                 clock: Callable[[], float] = time.monotonic):
        self.total_steps = total_steps
        self.batch_size = batch_size
        self.eval_every = eval_every
        self.clock = clock
        self.start = clock()
        self.rate: float | None = None  # smoothed examples/s
        self.eval_seconds: float | None = None  # the latest validation's (the first compiles)
        self._mark_step, self._mark_time, self._excluded = start_step, self.start, 0.0

    def first_step_done(self, step: int) -> float:
        """Starts the throughput measurement after the first step (its compilation left out);
        returns the seconds it took."""
        now = self.clock()
        seconds = now - self._mark_time
        self._mark_step, self._mark_time, self._excluded = step, now, 0.0
        return seconds

    @contextlib.contextmanager
    def excluded(self) -> Iterator[None]:
        """A validation (and its checkpoint): its time is left out of the throughput; the
        time left counts each remaining validation at the latest one's time."""
        begin = self.clock()
        yield
        self.eval_seconds = self.clock() - begin
        self._excluded += self.eval_seconds

    def measure(self, step: int) -> float | None:
        """Updates and returns the smoothed examples/s with the steps since the last measure
        (None before any training time was measured)."""
        now = self.clock()
        seconds = now - self._mark_time - self._excluded
        steps = step - self._mark_step
        if steps > 0 and seconds > 0:
            rate = steps * self.batch_size / seconds
            self.rate = rate if self.rate is None else (
                SMOOTHING * rate + (1 - SMOOTHING) * self.rate)
        self._mark_step, self._mark_time, self._excluded = step, now, 0.0
        return self.rate

    def validations_left(self, step: int) -> int:
        """Validations from `step` to the last step (one every `eval_every` and at the last)."""
        if step >= self.total_steps:
            return 0
        last = self.total_steps % self.eval_every != 0  # the last step validates too
        return self.total_steps // self.eval_every - step // self.eval_every + last

    def seconds_left(self, step: int) -> float | None:
        """The most seconds left: the remaining steps at the smoothed rate, plus the
        remaining validations at the latest one's time (none counted before one was timed;
        None before the rate is known)."""
        if not self.rate:
            return None
        steps = max(self.total_steps - step, 0)
        return (steps * self.batch_size / self.rate
                + self.validations_left(step) * (self.eval_seconds or 0.0))

    def line(self, step: int) -> str:
        """'9,870 examples/s, 1m05s elapsed, at most 12s left' (before a validation was
        timed: 'at most 10s of training left + 4 validations')."""
        parts = [] if self.rate is None else [f"{self.rate:,.0f} examples/s"]
        parts.append(f"{duration(self.clock() - self.start)} elapsed")
        left = self.seconds_left(step)
        validations = self.validations_left(step)
        if left is not None and (self.eval_seconds is not None or not validations):
            parts.append(f"at most {duration(left)} left")
        elif left is not None:
            parts.append(f"at most {duration(left)} of training left + {validations} "
                         f"validation{'s' * (validations > 1)}")
        return ", ".join(parts)


def _metric_order(name: str) -> tuple[str, int]:
    match = re.fullmatch(r"(.*)@(\d+)", name)
    return (match[1], int(match[2])) if match else (name, 0)


def metrics_table(results: dict) -> str:
    """The validation and test metrics of `results` (results.json's contents) as an aligned
    text table: one row per metric (HR@10, HR@50, ..., NDCG@10, ...), columns valid, test."""
    names = sorted(set(results["valid"]) | set(results["test"]), key=_metric_order)
    width = max(len("metric"), *map(len, names))
    rows = [f"{'metric'.ljust(width)}   valid    test"]
    for name in names:
        valid, test = results["valid"].get(name), results["test"].get(name)
        cells = ["     -" if v is None else f"{v:.4f}" for v in (valid, test)]
        rows.append(f"{name.ljust(width)}  {cells[0]:>6}  {cells[1]:>6}")
    return "\n".join(rows)
