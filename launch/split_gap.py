"""Where a trained run's drop from validation to test comes from (leave-one-out data).

  python launch/split_gap.py --config=configs/movielens.py:tuned --workdir=runs/ml1m_tuned \
      --set=data.path=data/ml-1m-subset.dat \
      --set=eval.mask_history=False

--config and --set must give the run's config (as given to sine_jax.main; a difference from
RUN_DIR/config.json is an error naming the --set that fixes it). From the best checkpoint it
ranks the test targets twice, with the test input and with the validation input (the
validation target, the test input's newest item, left out), and splits the test users by how
often their validation target occurs in the training data (`sine_jax.analysis.
validation_test_gap`). Writes RUN_DIR/split_gap.json and prints it. Exit code 2, with one line
on stderr, for a bad argument or a run without a checkpoint.
"""

import json
import os
import sys

from absl import flags

from sine_jax import analysis, cli
from sine_jax.experiments import tables
from sine_jax.workdir import write_json_atomic


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_string("config", None, "the run's config file[:arg]", flag_values=flag_values)
    flags.DEFINE_string("workdir", None, "the trained run's directory", flag_values=flag_values)
    flags.DEFINE_multi_string("set", [], "FIELD=VALUE: the run's config overrides (repeatable)",
                              flag_values=flag_values)
    flags.mark_flags_as_required(["config", "workdir"], flag_values=flag_values)


@cli.tool
def main(argv: list[str] | None = None) -> int:
    args = cli.parse_flags(define_flags, argv, __doc__)
    if not os.path.isdir(args.workdir):
        raise cli.UsageError(f"--workdir={args.workdir}: no such directory")
    config = tables.load_config(args.config, args.set)
    analysis.check_run_config(config, args.workdir)
    report = analysis.validation_test_gap(config, args.workdir)
    write_json_atomic(os.path.join(args.workdir, "split_gap.json"), report)
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
