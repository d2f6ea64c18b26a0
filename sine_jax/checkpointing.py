"""Orbax checkpoints of the train state, the grain iterator and the early-stopping record;
early stopping itself.

Layout: `WORKDIR/checkpoints/<step>/` with three items: `state` (the TrainState pytree),
`data` (the grain iterator state) and `progress` (JSON: best validation metric, best step,
evaluations without improvement). The most recent `keep` checkpoints are kept, and the
best one (by validation metric) is never deleted.
"""

import contextlib
import dataclasses
import os
from collections.abc import Callable
from typing import Any

import grain
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as policies

from sine_jax.errors import SineError


@dataclasses.dataclass
class Progress:
    """Early-stopping record saved with each checkpoint."""

    best_metric: float = float("-inf")
    best_step: int = -1
    evals_without_improvement: int = 0


class EarlyStopping:
    """Stops after `patience` validations without a new best (0 = never); its `record` is
    what every checkpoint saves, so a resumed run stops where the uninterrupted one would."""

    def __init__(self, patience: int, record: Progress | None = None):
        self.patience = patience
        self.record = Progress() if record is None else record

    def update(self, step: int, metric: float) -> bool:
        """Records the validation `metric` of `step`; True when training should stop."""
        if metric > self.record.best_metric:
            self.record = Progress(metric, step, 0)
        else:
            self.record.evals_without_improvement += 1
        return self.should_stop

    @property
    def should_stop(self) -> bool:
        return bool(self.patience) and self.record.evals_without_improvement >= self.patience


def _best_marker(metrics: dict[str, Any]) -> float:
    # A checkpoint that set a new best carries its step; later bests have larger steps, so
    # the largest marker is the current best (see `Checkpointer.save`).
    return metrics["best_marker"]


class Checkpointer:
    """Saves and restores (state, data iterator, progress) under `directory`."""

    def __init__(self, directory: str, *, keep: int):
        self.directory = os.path.abspath(directory)
        policy = policies.AnyPreservationPolicy(
            [
                policies.LatestN(n=keep),
                policies.BestN(
                    get_metric_fn=_best_marker, n=1, keep_checkpoints_without_metrics=False
                ),
            ]
        )
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                preservation_policy=policy, create=True, enable_async_checkpointing=True
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_iter: Any, progress: Progress) -> None:
        """Saves asynchronously; a checkpoint at `progress.best_step` is marked as the best."""
        if step in self.manager.all_steps():
            return
        is_best = progress.best_step == step
        with self._write_errors(step):
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    data=grain.checkpoint.CheckpointSave(data_iter),
                    progress=ocp.args.JsonSave(dataclasses.asdict(progress)),
                ),
                metrics={"best_marker": float(step) if is_best else -1.0},
                force=True,
            )

    @contextlib.contextmanager
    def _write_errors(self, step: int | None = None):
        """A failed (possibly earlier, asynchronous) save becomes a one-line SineError."""
        try:
            yield
        except Exception as e:  # noqa: BLE001 - orbax/tensorstore wrap OS errors in many types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            detail = first if len(first) <= 300 else first[:300] + "..."
            at = "" if step is None else f" (saving step {step})"
            raise SineError(
                f"{self.directory}: writing a checkpoint failed{at}: {detail}; is the disk "
                f"full or the directory read-only?"
            ) from e

    def restore(self, step: int, abstract_state: Any, data_iter: Any) -> tuple[Any, Progress]:
        """Restores state (onto the shardings of `abstract_state`), iterator and progress."""
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=grain.checkpoint.CheckpointRestore(data_iter),
                progress=ocp.args.JsonRestore(),
            ),
        )
        return restored["state"], Progress(**restored["progress"])

    def restore_latest(
        self, abstract_state: Any, make_iterator: Callable[[], Any]
    ) -> tuple[int, Any, Any, Progress] | None:
        """Restores the newest checkpoint that loads; damaged ones are skipped with a warning.

        Returns:
          (step, state, data iterator, progress), or None when there is no usable checkpoint.
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            data_iter = make_iterator()  # a failed restore may leave an iterator half-set
            try:
                state, progress = self.restore(step, abstract_state, data_iter)
            except Exception as e:  # noqa: BLE001 - any failure means: try the previous one
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                logging.warning(
                    "checkpoint %s/%d is damaged, partial or from an incompatible version (%s); "
                    "trying the previous one",
                    self.directory, step, reason,
                )
                continue
            return step, state, data_iter, progress
        return None

    def restore_state(self, step: int, abstract_state: Any) -> Any:
        """Restores only the train state of checkpoint `step`."""
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
        )
        return restored["state"]

    def best_step(self) -> int | None:
        """The best step recorded by the newest checkpoint whose progress record loads."""
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self.manager.restore(
                    step, args=ocp.args.Composite(progress=ocp.args.JsonRestore())
                )
            except Exception as e:  # any failure means: try the previous one
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                logging.warning(
                    "checkpoint %s/%d: no progress record (%s)", self.directory, step, reason
                )
                continue
            return Progress(**restored["progress"]).best_step
        return None

    def restore_params(self, step: int, abstract_params: Any) -> Any:
        """Restores only `state.params` of checkpoint `step`, whatever else the saved state
        holds (e.g. a train state written before fields were added to it)."""
        item = {"params": abstract_params}
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item=item,
                    restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                    partial_restore=True,
                )
            ),
        )
        return restored["state"]["params"]

    def restore_best_params(self, abstract_params: Any) -> tuple[int, Any]:
        """(best step, its parameters) onto the shardings of `abstract_params`; nothing else
        of the train state is read (no optimizer state, no data iterator).

        Raises:
            SineError: no checkpoint records a best step.
        """
        best_step = self.best_step()
        if best_step is None or best_step < 0:
            raise SineError(f"{self.directory}: no checkpoint to restore; train first")
        return best_step, self.restore_params(best_step, abstract_params)

    def wait(self) -> None:
        with self._write_errors():
            self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
