"""Command line: `python -m sine_jax.main --config=CONFIG --workdir=DIR [--mode=MODE]`.

Modes: train (the default; rerunning on the same workdir resumes), eval (the best
checkpoint), export (the best checkpoint to DIR/export, see sine_jax/export.py), recommend
(from DIR/export: `--history=ID,ID,...` or `--histories=FILE.jsonl`, one JSON line out per
history) and config (every field of the config with its value and description; nothing is
loaded or trained). Eval, export and config read the config the workdir's run was trained
with (DIR/config.json) when no --config is given; recommend needs none. Any config field can
be overridden with `--config.FIELD=VALUE`. A problem the user can fix ends with one line on
stderr and exit code 2.
"""

import json
import os
import sys

from absl import flags
from ml_collections import config_flags

from sine_jax import cli, progress, run_config, runtime

_CONFIG = config_flags.DEFINE_config_file(
    "config", None,
    "Config file, configs/NAME.py[:PRESET]; --config.FIELD=VALUE overrides a field (list "
    "them with --mode=config). Eval, export and config: default the workdir's recorded one.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (checkpoints, results).")
_MODE = flags.DEFINE_enum(
    "mode", "train", ["train", "eval", "export", "recommend", "config"],
    "train (resumes), eval, export, recommend, or config (print the resolved config).",
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
    "train: resume a workdir even though the config or the input file's content differs "
    "from what it started with; eval, export: use its checkpoints on other input content.",
)
# Modes that read the workdir's recorded config when no --config is given.
RECORDED_CONFIG_MODES = ("eval", "export", "config")


def main(argv):
    """Runs under `cli.run_app`: a SineError anywhere is one line and exit code 2."""
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    runtime.quiet_libraries()
    check_usage()
    mode = _MODE.value
    if mode == "recommend":
        recommend()
    elif mode == "export":
        export()
    elif mode == "config":
        print_config()
    else:
        train_or_evaluate(mode)


def check_usage() -> None:
    """Raises UsageError when the parsed flags do not fit --mode (before anything runs)."""
    mode = _MODE.value
    if mode == "recommend" and (_HISTORY.value is None) == (_HISTORIES.value is None):
        raise cli.UsageError("--mode=recommend needs exactly one of --history, --histories")
    if mode != "config" and _WORKDIR.value is None:
        raise cli.UsageError(f"--mode={mode} needs --workdir")
    if mode not in ("recommend", "config") and _CONFIG.value is None:
        raise cli.UsageError(f"--mode={mode} needs --config")
    if mode == "config" and _CONFIG.value is None:
        raise cli.UsageError("--mode=config needs --config, or the --workdir of a run")


def print_config() -> None:
    """--mode=config: every field of the resolved config, its value and its description."""
    import inspect

    from configs import default  # the schema, importable once a config file has loaded

    from sine_jax import config_docs

    descriptions = config_docs.field_descriptions(inspect.getsource(default))
    print(config_docs.listing(_CONFIG.value, descriptions, default.get_config()))


def train_or_evaluate(mode: str) -> None:
    """--mode=train or eval: the validation and test metrics as a table on stderr (after
    training, with results.json's path), and as one JSON line on stdout with the best step."""
    runtime.start_jax(_CONFIG.value)
    from sine_jax import multihost, train

    with multihost.stop_together():  # an error in one process of a multi-process run ends all
        if mode == "train":
            results = train.train_and_evaluate(
                _CONFIG.value, _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value
            )
        else:
            results = train.evaluate_checkpoint(
                _CONFIG.value, _WORKDIR.value, allow_input_change=_ALLOW_CONFIG_CHANGE.value
            )
    # For the user, on stderr after the log: the metrics table and where the results are.
    print(progress.metrics_table(results), file=sys.stderr)
    if mode == "train":
        print(f"results: {os.path.join(_WORKDIR.value, 'results.json')} (best step "
              f"{results['best_step']}, {progress.duration(results['wall_seconds'])}); curves: "
              f"tensorboard --logdir {_WORKDIR.value}", file=sys.stderr)
    # For scripts, on stdout: one JSON line.
    print(json.dumps({"test": results["test"], "valid": results["valid"],
                      "best_step": results["best_step"]}, sort_keys=True))


def export() -> None:
    """--mode=export: writes WORKDIR/export and prints its path (one process, on this
    host's devices: mesh.distributed is not joined)."""
    runtime.start_jax(_CONFIG.value, join=False)
    from sine_jax import export as export_lib

    export_lib.export_model(
        _CONFIG.value, _WORKDIR.value, allow_input_change=_ALLOW_CONFIG_CHANGE.value
    )
    print(json.dumps({"export": os.path.join(_WORKDIR.value, "export")}))


def recommend() -> None:
    """--mode=recommend: one JSON line per history, from WORKDIR/export."""
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


if __name__ == "__main__":
    sys.argv = run_config.with_recorded_config(sys.argv, RECORDED_CONFIG_MODES)
    cli.run_app(main)
