"""Command line: `python -m sine_jax.main --config=CONFIG --workdir=DIR [--mode=MODE]`.

Modes: train (the default; rerunning on the same workdir resumes), eval (the best
checkpoint), export (the best checkpoint to DIR/export, see sine_jax/export.py) and recommend
(from DIR/export: `--history=ID,ID,...` or `--histories=FILE.jsonl`, one JSON line out per
history; needs no --config). Any config field can be overridden with
`--config.FIELD=VALUE`. A problem the user can fix ends with one line on stderr and exit
code 2.
"""

import json
import logging as logging_std
import os
import sys
import warnings

from absl import app, flags, logging
from ml_collections import config_flags

from sine_jax.errors import SineError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (checkpoints, results).")
_MODE = flags.DEFINE_enum(
    "mode", "train", ["train", "eval", "export", "recommend"],
    "train (resumes), eval, export or recommend.",
)
_HISTORY = flags.DEFINE_string("history", None, "recommend: original item ids, oldest first.")
_HISTORIES = flags.DEFINE_string(
    "histories", None, 'recommend: JSONL file, a list of ids or {"history": [...]} per line.'
)
_TOP_N = flags.DEFINE_integer("top_n", 10, "recommend: items per history.")
_EXPLAIN = flags.DEFINE_bool("explain", False, "recommend: add interests, weights, items.")
_EXCLUDE_HISTORY = flags.DEFINE_bool(
    "exclude_history", True, "recommend: leave the history's items out of the results."
)
_SKIP_UNKNOWN = flags.DEFINE_bool(
    "skip_unknown", False, "recommend: drop unknown item ids (listed under 'unknown')."
)
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False,
    "train: resume a workdir even though the config differs from the one it started with.",
)
flags.mark_flags_as_required(["workdir"])


class _QuietLibraries(logging_std.Filter):
    """Keeps INFO lines of sine_jax; libraries (orbax, grain, asyncio, ...) show warnings only,
    each as one line: their tracebacks are dropped (a failure the user can fix is reported
    by sine_jax itself, in one line)."""

    def filter(self, record: logging_std.LogRecord) -> bool:
        if "/sine_jax/" in record.pathname:
            return True
        if record.levelno < logging_std.WARNING:
            return False
        record.msg = record.getMessage().split("\n", 1)[0]
        record.args, record.exc_info, record.exc_text, record.stack_info = (), None, None, None
        return True


def _one_line_unraisable(unraisable) -> None:
    """Library callbacks that fail after a failed save (e.g. into orbax's closed event loop)
    are logged in one line instead of a traceback each."""
    logging.debug("ignored in a library callback: %r", unraisable.exc_value)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.get_absl_handler().addFilter(_QuietLibraries())
    # Orbax's async writes leave "exception never retrieved" futures when a save fails; the
    # failure itself is reported by sine_jax.
    logging_std.getLogger("asyncio").setLevel(logging_std.CRITICAL)
    # ... and, at exit, may leave a coroutine of a failed save never awaited, whose warning
    # would otherwise come after the one-line error.
    warnings.filterwarnings("ignore", message=r"coroutine .* was never awaited")
    sys.unraisablehook = _one_line_unraisable
    mode = _MODE.value
    if mode == "recommend" and (_HISTORY.value is None) == (_HISTORIES.value is None):
        raise app.UsageError("--mode=recommend needs exactly one of --history, --histories")
    if mode != "recommend" and _CONFIG.value is None:
        raise app.UsageError(f"--mode={mode} needs --config")
    try:
        if mode == "recommend":
            _recommend()
        else:
            _run(mode)
    except SineError as e:
        logging.get_absl_handler().setLevel(logging_std.CRITICAL + 1)  # the error stays last
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _run(mode: str) -> None:
    from sine_jax import host_memory

    host_memory.keep_freed_memory_in_heap()  # before JAX allocates anything
    from sine_jax import train  # JAX starts here, after flags are parsed

    if _CONFIG.value.mesh.distributed:
        _initialize_distributed()  # before the first device query
    logging.info("devices: %s", train.jax.devices())
    if mode == "export":
        from sine_jax import export

        export.export_model(_CONFIG.value, _WORKDIR.value)
        print(json.dumps({"export": os.path.join(_WORKDIR.value, "export")}))
        return
    if mode == "train":
        results = train.train_and_evaluate(
            _CONFIG.value, _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value
        )
    else:
        results = train.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value)
    print(json.dumps({"test": results["test"], "valid": results["valid"],
                      "best_step": results["best_step"]}, sort_keys=True))


def _initialize_distributed() -> None:
    """mesh.distributed: joins the multi-host job (see launch/multihost_example.sh).

    JAX reads the coordinator (JAX_COORDINATOR_ADDRESS) itself and detects SLURM, Open MPI
    and Cloud TPU; the process count and this process's id come from JAX_NUM_PROCESSES and
    JAX_PROCESS_ID when set (JAX does not read those two)."""
    import jax

    kwargs = {}
    for name, arg in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
        value = os.environ.get(name, "")
        if value and not value.isdigit():
            raise SineError(f"{name}={value!r} must be a non-negative integer")
        if value:
            kwargs[arg] = int(value)
    try:
        jax.distributed.initialize(**kwargs)
    except Exception as e:  # ValueError, RuntimeError, a timeout reaching the coordinator, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SineError(
            f"mesh.distributed=True: jax.distributed.initialize() failed ({reason}); on every "
            "host set JAX_COORDINATOR_ADDRESS=HOST:PORT (process 0's host), JAX_NUM_PROCESSES "
            "and JAX_PROCESS_ID, or run under SLURM / Open MPI, which are detected"
        ) from e
    logging.info("process %d of %d", jax.process_index(), jax.process_count())


def _recommend() -> None:
    from sine_jax import serving

    serving.print_recommendations(
        os.path.join(_WORKDIR.value, "export"),
        history=_HISTORY.value,
        histories_path=_HISTORIES.value,
        top_n=_TOP_N.value,
        exclude_history=_EXCLUDE_HISTORY.value,
        explain=_EXPLAIN.value,
        on_unknown="skip" if _SKIP_UNKNOWN.value else "error",
    )


def _exit_on_a_bad_config_file(argv: list[str]) -> None:
    """--config=FILE[:ARG] that is missing or whose get_config fails: one line and exit 2
    (ml_collections would report it with a traceback while parsing the flags)."""
    from sine_jax import run_config

    for i, arg in enumerate(argv[1:], 1):
        if arg == "--config" and i + 1 < len(argv):
            spec = argv[i + 1]
        elif arg.startswith("--config="):
            spec = arg.removeprefix("--config=")
        else:
            continue
        try:
            run_config.load_config_file(spec)
        except SineError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)


if __name__ == "__main__":
    _exit_on_a_bad_config_file(sys.argv)
    app.run(main)
