"""Scalars to TensorBoard event files (tensorboardX, no TensorFlow) and to metrics.jsonl."""

import json
import os

from tensorboardX import SummaryWriter


class MetricWriter:
    """Writes `{name: value}` per step to WORKDIR/tensorboard and WORKDIR/metrics.jsonl.

    TensorBoard tags cannot hold '@': `valid/HR@10` is written there as `valid/HR_10`.

    After a resume, steps between the last checkpoint and the interruption appear twice in
    metrics.jsonl; readers keep the last line of each step.
    """

    def __init__(self, workdir: str):
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

    def write(self, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self._tb.add_scalar(name.replace("@", "_"), value, step)  # TensorBoard: HR_10
        self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self._jsonl.flush()

    def close(self) -> None:
        self._tb.close()
        self._jsonl.close()
