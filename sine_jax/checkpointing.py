"""Orbax checkpoints of the train state, the grain iterator and the early-stopping record;
their checksums and the quarantine of damaged ones; early stopping itself.

Layout: `WORKDIR/checkpoints/<step>/` with `state` (the TrainState pytree), `data` (the
grain iterator state, one file per process), `progress` (JSON: best validation metric, best
step, evaluations without improvement), `metrics` (Orbax's record of whether this checkpoint
was the best when saved) and `sha256.json`. The most recent `keep` checkpoints are kept, and
the best one (by validation metric) is never deleted, also after a resume.

Integrity: Orbax checks the structure of what it reads but not the bytes of the array data
(its zarr3 chunks carry no checksum), so flipped bytes would restore as other numbers.
`sha256.json` holds the SHA-256 of every file of the three items. It is written in Orbax's
save thread once the files are final and before the step directory is committed (renamed
from `<step>.orbax-checkpoint-tmp`), so a committed checkpoint always has it, and it is
verified before anything is restored. A checkpoint that fails the check or does not load is
damaged: it is moved to `WORKDIR/checkpoints.damaged/<step>` with one warning line, never
read again, and the step is written anew when training reaches it. A checkpoint whose files
are intact but that does not restore into the run was written by another model or dataset:
a one-line error. Checkpoints written before checksums existed are restored unverified.

Multi-process runs: every process saves and restores through Orbax's own protocol (each
writes its shards; process 0 writes the rest and, in the post-finalization callback, the
checksums). Process 0 verifies the checksums and moves damaged checkpoints aside; the other
processes follow its verdict (`multihost.share`).
"""

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as policies

from sine_jax import multihost
from sine_jax.errors import SineError

CHECKSUMS_FILE = "sha256.json"
DAMAGED_SUFFIX = ".damaged"  # WORKDIR/checkpoints.damaged/<step>: quarantined checkpoints
_MARKER_ITEM = "metrics"  # Orbax's item for the metrics of `CheckpointManager.save`
_HASH_BLOCK = 1 << 20


def write_checksums(step_dir: str) -> None:
    """Writes STEP_DIR/sha256.json: {relative path: SHA-256} of every file below the step's
    item directories (the root's own files are Orbax's commit records, rewritten on commit).
    """
    sums = {}
    for root, _, files in os.walk(step_dir):
        if root == step_dir:
            continue
        for name in files:
            path = os.path.join(root, name)
            sums[os.path.relpath(path, step_dir)] = _sha256(path)
    with open(os.path.join(step_dir, CHECKSUMS_FILE), "w") as f:
        json.dump({"sha256": sums}, f, indent=0, sort_keys=True)


def verify_checksums(step_dir: str, items: tuple[str, ...]) -> str | None:
    """Why the files of `items` (e.g. ("state",)) in STEP_DIR differ from its sha256.json (a
    file missing or changed, the record unreadable), or None when they match.

    Raises:
        FileNotFoundError: there is no sha256.json (a checkpoint of an earlier version).
    """
    try:
        with open(os.path.join(step_dir, CHECKSUMS_FILE), encoding="utf-8") as f:
            sums = json.load(f)["sha256"]
        wanted = sorted((path, digest) for path, digest in sums.items()
                        if path.split(os.sep, 1)[0] in items)
        if not wanted or not all(isinstance(digest, str) for _, digest in wanted):
            raise ValueError(f"no checksums of {', '.join(items)}")
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{CHECKSUMS_FILE} is unreadable ({type(e).__name__})"
    for relative, expected in wanted:
        try:
            actual = _sha256(os.path.join(step_dir, relative))
        except OSError as e:
            return f"{relative}: {e.strerror}"
        if actual != expected:
            return f"{relative} does not match its checksum"
    return None


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _check_process_count(step_dir: str) -> None:
    """Refuses to resume from a checkpoint written by a run of another number of processes:
    the data iterator's position is recorded per process (`data/process_I-of-N.json`).

    Raises:
        SineError: naming the number of processes that wrote it.
    """
    data_dir = os.path.join(step_dir, "data")
    mine = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    if not os.path.isdir(data_dir) or os.path.exists(os.path.join(data_dir, mine)):
        return
    written = [name for name in os.listdir(data_dir) if name.startswith("process_")]
    if written:
        count = written[0].removesuffix(".json").rsplit("-of-", 1)[-1]
        raise SineError(
            f"checkpoint {step_dir} was written by a run of {count} process(es) and this run "
            f"has {jax.process_count()}: resume it with {count}, or use another --workdir"
        )


def _first_line(error: BaseException) -> str:
    """The first sentence of the first line of an error's message (at most 200 characters)."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return line.split(". ", 1)[0][:200]


class DamagedCheckpoint(SineError):
    """A checkpoint failed its checksums or did not load; it has been quarantined."""


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
    """Saves and restores (state, data iterator, progress) under `directory`, checksummed;
    damaged checkpoints are quarantined (see the module docstring)."""

    def __init__(self, directory: str, *, keep: int):
        self.directory = os.path.abspath(directory)
        self.quarantine_dir = self.directory + DAMAGED_SUFFIX
        self._saving_step = None  # the step whose save is in flight (at most one)
        self._damaged = set()  # steps found damaged in this process: never read again
        self._set_aside_damaged_markers()
        policy = policies.AnyPreservationPolicy(
            [
                policies.LatestN(n=keep),
                # A checkpoint without a marker on disk (written before markers were
                # saved) may be the best: kept, never deleted to make room.
                policies.BestN(
                    get_metric_fn=_best_marker, n=1, keep_checkpoints_without_metrics=True
                ),
            ]
        )
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                # best_fn makes Orbax write each checkpoint's marker to disk and read it back
                # when a run resumes; without it the markers live in memory only and a resumed
                # run's first saves delete the best checkpoint (if it is not among the latest).
                best_fn=_best_marker, best_mode="max",
                preservation_policy=policy, create=True, enable_async_checkpointing=True,
                async_options=ocp.AsyncOptions(post_finalization_callback=self._write_checksums),
            ),
        )

    def _set_aside_damaged_markers(self) -> None:
        """Quarantines the checkpoints whose best marker (`metrics`) fails its checksum:
        Orbax reads every marker when the manager is built and would fail on a damaged one."""
        if not os.path.isdir(self.directory):
            return
        steps = sorted(int(name) for name in os.listdir(self.directory) if name.isdigit())
        for step in steps:
            step_dir = os.path.join(self.directory, str(step))
            if not os.path.isdir(os.path.join(step_dir, _MARKER_ITEM)):
                continue  # written before markers were saved
            problem, _ = self._verify(step_dir, (_MARKER_ITEM,))
            if problem is not None:
                self._move_aside(step, problem)

    def _write_checksums(self) -> None:
        """Orbax's post-finalization callback (its save thread, primary process): the files of
        the step in flight are final, its directory not yet committed."""
        step, self._saving_step = self._saving_step, None
        if step is None:  # a save made through `self.manager` directly: left unverified
            return
        tmp = os.path.join(self.directory, f"{step}{ocp.path.atomicity.TMP_DIR_SUFFIX}")
        write_checksums(tmp if os.path.isdir(tmp) else os.path.join(self.directory, str(step)))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_iter: Any, progress: Progress) -> None:
        """Saves asynchronously; a checkpoint at `progress.best_step` is marked as the best."""
        if step in self.manager.all_steps():
            return
        is_best = progress.best_step == step
        self._damaged.discard(step)  # quarantined: written anew
        with self._write_errors(step):
            self.manager.wait_until_finished()  # the previous save's checksums are written
            self._saving_step = step
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
        """Restores state (onto the shardings of `abstract_state`), iterator and progress.

        Raises:
            DamagedCheckpoint: the checkpoint is damaged (it has been quarantined).
            SineError: its files are intact but do not restore into `abstract_state`.
        """
        restored = self._checked_restore(
            step,
            ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=grain.checkpoint.CheckpointRestore(data_iter),
                progress=ocp.args.JsonRestore(),
            ),
        )
        return restored["state"], Progress(**restored["progress"])

    def restore_latest(
        self, abstract_state: Any, make_iterator: Callable[[], Any]
    ) -> tuple[int, Any, Any, Progress] | None:
        """Restores the newest checkpoint that loads; damaged ones are quarantined with a
        warning on the way.

        Returns:
          (step, state, data iterator, progress), or None when there is no usable checkpoint.
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            data_iter = make_iterator()  # a failed restore may leave an iterator half-set
            try:
                state, progress = self.restore(step, abstract_state, data_iter)
            except DamagedCheckpoint:
                continue
            return step, state, data_iter, progress
        return None

    def restore_state(self, step: int, abstract_state: Any) -> Any:
        """Restores only the train state of checkpoint `step` (raises as `restore`)."""
        restored = self._checked_restore(
            step, ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
        )
        return restored["state"]

    def best_step(self) -> int | None:
        """The best step recorded by the newest checkpoint that loads (damaged ones are
        quarantined on the way); None when there is none."""
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self._checked_restore(
                    step, ocp.args.Composite(progress=ocp.args.JsonRestore())
                )
            except DamagedCheckpoint:
                continue
            return Progress(**restored["progress"]).best_step
        return None

    def restore_params(self, step: int, abstract_params: Any) -> Any:
        """Restores only `state.params` of checkpoint `step`, whatever else the saved state
        holds (e.g. a train state written before fields were added to it); raises as
        `restore`. Use a Checkpointer that has not saved (Orbax binds the `state` item to
        the whole-state handler on the first save)."""
        item = {"params": abstract_params}
        restored = self._checked_restore(
            step,
            ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item=item,
                    restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                    partial_restore=True,
                )
            ),
        )
        return restored["state"]["params"]

    def restore_best_params(
        self,
        abstract_params: Any,
        best_step: int | None = None,
        score: Callable[[Any], float] | None = None,
    ) -> tuple[int, Any]:
        """(best step, its parameters) onto the shardings of `abstract_params`; nothing else
        of the train state is read (no optimizer state, no data iterator).

        Args:
            abstract_params: the parameters' shapes, dtypes and shardings.
            best_step: the best step; None = the one the newest loadable checkpoint records.
            score: the validation metric of parameters (higher is better). When the best
                checkpoint is damaged (quarantined) or gone, the loadable checkpoint that
                scores highest is used instead, with a warning (None: the newest loadable).

        Raises:
            SineError: there is no checkpoint, none loads, or an intact one does not fit.
        """
        if best_step is None:
            best_step = self.best_step()
        if best_step is None or best_step < 0:
            if self.manager.all_steps() or not os.path.isdir(self.quarantine_dir):
                raise SineError(f"{self.directory}: no checkpoint to restore; train first")
            raise SineError(f"{self.directory}: no checkpoint loads (the damaged ones were "
                            f"moved to {self.quarantine_dir}); train again")
        if best_step in self.manager.all_steps():
            try:
                return best_step, self.restore_params(best_step, abstract_params)
            except DamagedCheckpoint:
                pass
        chosen = None  # (score, step, params) of the best loadable checkpoint so far
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                params = self.restore_params(step, abstract_params)
            except DamagedCheckpoint:
                continue
            value = score(params) if score is not None else float("-inf")
            if chosen is None or value > chosen[0]:
                chosen = (value, step, params)
        if chosen is None:
            raise SineError(f"{self.directory}: no checkpoint loads (the damaged ones were "
                            f"moved to {self.quarantine_dir}); train again")
        how = "the best by validation" if score is not None else "the newest"
        logging.warning(
            "the best checkpoint (step %d) of %s is damaged or gone; using step %d instead, "
            "%s of the checkpoints that load", best_step, self.directory, chosen[1], how,
        )
        return chosen[1], chosen[2]

    def _checked_restore(self, step: int, args: ocp.args.Composite) -> Any:
        """`manager.restore(step, args)` after verifying the checksums of the items read.

        Raises:
            DamagedCheckpoint: checksums do not match, or an unverified checkpoint (of an
                earlier version) fails to load; it has been quarantined.
            SineError: intact files that do not restore into `args` (another model or data).
        """
        step_dir = os.path.join(self.directory, str(step))
        if step in self._damaged:
            raise DamagedCheckpoint(f"checkpoint {step_dir} is damaged")
        problem, verified = self._verify(step_dir, tuple(args.keys()))
        if problem is not None:
            raise self._quarantine(step, problem)
        if "data" in args:
            _check_process_count(step_dir)
        try:
            return self.manager.restore(step, args=args)
        except Exception as e:  # noqa: BLE001 - orbax, tensorstore and grain raise many types
            if not verified:
                raise self._quarantine(step, _first_line(e)) from e
            raise SineError(
                f"checkpoint {step_dir} is intact but does not restore into this run "
                f"({_first_line(e)}): it was written for another model or dataset; move "
                f"{self.directory} aside to start afresh"
            ) from e

    @staticmethod
    def _verify(step_dir: str, items: tuple[str, ...]) -> tuple[str | None, bool]:
        """(`verify_checksums`' problem or None, whether the checkpoint has checksums), as
        process 0 finds them: in a multi-process run the others read its verdict
        (`multihost.share`) instead of reading every file again."""
        verdict = None
        if multihost.is_primary():
            try:
                verdict = json.dumps([verify_checksums(step_dir, items), True])
            except FileNotFoundError:  # written before checksums existed
                verdict = json.dumps([None, False])
        problem, verified = json.loads(multihost.share(f"checksums {step_dir}", verdict))
        return problem, verified

    def _quarantine(self, step: int, reason: str) -> "DamagedCheckpoint":
        """`_move_aside`, then the manager forgets the step; returns the exception to raise."""
        where = self._move_aside(step, reason)
        self.manager.reload()
        step_dir = os.path.join(self.directory, str(step))
        return DamagedCheckpoint(f"checkpoint {step_dir} is damaged ({reason}); {where}")

    def _move_aside(self, step: int, reason: str) -> str:
        """Moves checkpoint `step` to the quarantine directory (process 0; every process of
        a multi-process run calls this, the others wait for the move) with one warning line;
        returns where it went."""
        step_dir = os.path.join(self.directory, str(step))
        where = None
        if multihost.is_primary():
            target = os.path.join(self.quarantine_dir, str(step))
            suffix = 0
            while os.path.exists(target):
                suffix += 1
                target = os.path.join(self.quarantine_dir, f"{step}.{suffix}")
            where = f"moved to {target}"
            try:
                os.makedirs(self.quarantine_dir, exist_ok=True)
                os.rename(step_dir, target)
            except OSError as e:
                where = f"could not be moved aside ({e.strerror}) and is skipped"
        where = multihost.share(f"quarantine {step_dir}", where)
        logging.warning(
            "checkpoint %s is damaged, partial or from an incompatible version (%s); %s",
            step_dir, reason, where,
        )
        self._damaged.add(step)
        return where

    def wait(self) -> None:
        with self._write_errors():
            self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
