"""Scalars to TensorBoard event files (tensorboardX, no TensorFlow) and to metrics.jsonl."""

import json
import os

from tensorboardX import SummaryWriter

from sine_jax import multihost


class MetricWriter:
    """Writes `{name: value}` per step to WORKDIR/tensorboard and WORKDIR/metrics.jsonl.

    TensorBoard tags cannot hold '@': `valid/HR@10` is written there as `valid/HR_10`.

    In a multi-process run only process 0 writes (the scalars are the run's, the same in
    every process); the others' writes are dropped.

    After a resume, steps between the last checkpoint and the interruption appear twice in
    metrics.jsonl; readers keep the last line of each step.
    """

    def __init__(self, workdir: str):
        self._files = None
        if multihost.is_primary():
            self._files = (SummaryWriter(os.path.join(workdir, "tensorboard")),
                           open(os.path.join(workdir, "metrics.jsonl"), "a"))

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if self._files is None:
            return
        tensorboard, jsonl = self._files
        for name, value in scalars.items():
            tensorboard.add_scalar(name.replace("@", "_"), value, step)  # TensorBoard: HR_10
        jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        jsonl.flush()

    def close(self) -> None:
        if self._files is not None:
            for f in self._files:
                f.close()
