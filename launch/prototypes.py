"""Prototype quality of one trained SINE run: do its concept prototypes follow item categories?

  python launch/prototypes.py --config=configs/movielens.py --workdir=runs/ml1m \
      --set=data.path=data/ml-1m-subset.dat
  python launch/prototypes.py --config=configs/movielens.py \
      --workdir=runs/table1_ml1m/name-sine_seed-1 --set=train.seed=1 --set=model.name=sine \
      --set=data.path=data/ml-1m-subset.dat \
      --set=data.cache_dir=runs/table1_ml1m/cache
  python launch/prototypes.py --config=configs/synthetic.py --workdir=runs/synthetic \
      --num_concepts=6 --neighbours=10

--config and --set must give the run's config (as given to sine_jax.main or sweep.py; a
difference from RUN_DIR/config.json is an error naming the --set that fixes it). Loads the
best checkpoint and reports (`sine_jax.analysis`) the NMI between each item's nearest
prototype and its category against chance, prototype usage over the test users (distinct
prototypes selected, perplexity, the top-K share), the mean entropies of P(k|t) (eq 3) and
e (eq 7), and the --num_concepts prototypes nearest to the most items with their
--neighbours nearest items.

Writes RUN_DIR/prototypes.json, RUN_DIR/concepts.md and RUN_DIR/concepts.png (one column per
concept). Exit code 2, with one line on stderr, for a bad argument, a model without
prototypes (a baseline), data without item categories or a run without a checkpoint.
"""

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
    flags.DEFINE_integer("num_concepts", 4, "concepts to list", flag_values=flag_values)
    flags.DEFINE_integer("neighbours", 8, "items listed per concept", flag_values=flag_values)
    flags.mark_flags_as_required(["config", "workdir"], flag_values=flag_values)


@cli.tool
def main(argv: list[str] | None = None) -> int:
    args = cli.parse_flags(define_flags, argv, __doc__)
    for flag in ("num_concepts", "neighbours"):
        if getattr(args, flag) < 1:
            raise cli.UsageError(f"--{flag}={getattr(args, flag)} must be >= 1")
    if not os.path.isdir(args.workdir):
        raise cli.UsageError(f"--workdir={args.workdir}: no such directory")
    config = tables.load_config(args.config, args.set)
    analysis.check_run_config(config, args.workdir)
    report = analysis.analyse(config, args.workdir, args.num_concepts, args.neighbours)
    write_json_atomic(os.path.join(args.workdir, "prototypes.json"), report)
    with open(os.path.join(args.workdir, "concepts.md"), "w") as f:
        f.write(analysis.concepts_markdown(report))
    analysis.plot_concepts(report, os.path.join(args.workdir, "concepts.png"))
    nmi = report["nmi"]
    usage = report["usage"]
    print(f"NMI {nmi['nmi']:.4f} (chance {nmi['chance_nmi']:.4f}); {report['prototypes_used']}/"
          f"{report['num_prototypes']} prototypes nearest to some item; {usage['selected']}/"
          f"{usage['num_prototypes']} selected by some user (perplexity "
          f"{usage['perplexity']:.1f}, top-K share {usage['top_k_share']:.3f}); concepts in "
          f"{os.path.join(args.workdir, 'concepts.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
