"""Command line: `python -m sine_jax.main --config=CONFIG --workdir=DIR [--mode=train|eval]`.

Any config field can be overridden with `--config.FIELD=VALUE`. Rerunning the same command
on the same workdir resumes. A problem the user can fix ends with one line on stderr and
exit code 2.
"""

import json
import logging as logging_std
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from sine_jax.errors import SineError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (checkpoints, results).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (resumes) or eval.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(logging_std.Filter):
    """Keeps INFO lines of sine_jax; libraries (orbax, grain, tensorboardX) show warnings only."""

    def filter(self, record: logging_std.LogRecord) -> bool:
        return record.levelno >= logging_std.WARNING or "/sine_jax/" in record.pathname


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.get_absl_handler().addFilter(_QuietLibraries())
    from sine_jax import train  # JAX starts here, after flags are parsed

    logging.info("devices: %s", train.jax.devices())
    try:
        if _MODE.value == "train":
            results = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
        else:
            results = train.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value)
    except SineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps({"test": results["test"], "valid": results["valid"],
                      "best_step": results["best_step"]}, sort_keys=True))


if __name__ == "__main__":
    app.run(main)
