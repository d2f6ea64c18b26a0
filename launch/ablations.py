"""SINE's ambiguity switches (`sine_jax.sine_options.SWITCHES`), one at a time against the
paper preset.

  python launch/ablations.py --config=configs/movielens.py --workdir=runs/ablations_ml100k \
      --seeds=0,1,2 --cpu_jobs=2 --set=data.path=data/ml-100k/u.data
  python launch/ablations.py --config=configs/movielens.py --workdir=runs/ablations_ml1m \
      --seeds=0 --variants=paper,assignment-cosine,official \
      --set=data.path=data/ml-1m-subset.dat
  python launch/ablations.py ... --collect_only   # the table from the runs there; runs nothing

Each variant is the run of --config and --set with the literal paper's model preset
(model.preset=paper) and one more override (`sine_jax.experiments.ablations.VARIANTS`):
`paper` is the reference row; `official` is the reference code's preset as a whole. The
config's default preset is the paper plus the switches that passed the rule
(sine_jax.sine_options.ADOPTED): `assignment-cosine` alone, then the cosine logit scale, 2
encoder blocks and dropout 0.2 together. Jobs run as launch/sweep.py runs them
(one per GPU, else --cpu_jobs at a time), in WORKDIR/VARIANT_seed-SEED; a rerun skips the
finished ones. Then it writes

  WORKDIR/ablations.md    per variant: test HR and NDCG at 10 and 50 (mean ± std over the
                          seeds, percent), validation HR@10 and its difference from `paper`
                          (paired: the mean over the seeds both finished, their number in
                          brackets), and whether that difference meets the decision rule
                          on this dataset (>= +0.5 points of mean validation HR@10 over 3
                          seeds; the rule asks it of both the ML-1M subset and ML-100K); runs
                          that did not finish
  WORKDIR/ablations.json  every run's metrics and the aggregates

Exit code: 0 when every job finished, 1 when one failed, 2 for a bad argument (nothing
runs), 130 when interrupted (rerun to resume).
"""

import sys

from absl import flags

from sine_jax import cli
from sine_jax.experiments import ablations, paper_table, sweep, tables


def define_flags(flag_values: flags.FlagValues) -> None:
    tables.define_table_flags(flag_values, "the ablation's directory")
    flags.DEFINE_string("variants", None,
                        f"a subset of {', '.join(ablations.VARIANTS)} (default all)",
                        flag_values=flag_values)
    flags.DEFINE_string("ks", None, "cut-offs of the columns, e.g. 10,50 (default by data)",
                        flag_values=flag_values)


@cli.tool
def main(argv: list[str] | None = None) -> int:
    args = cli.parse_flags(define_flags, argv, __doc__)
    jobs = ablations.plan(args.config, args.workdir, variants=args.variants,
                          seeds=args.seeds, sets=args.set)
    config = tables.load_config(args.config, args.set)
    if config.model.name != "sine":
        raise sweep.SweepError(f"model.name={config.model.name}: the switches are SINE's; "
                               "ablate model.name=sine")
    ks, metrics, _ = paper_table.table_layout(
        config, tables.parse_ks(args.ks) if args.ks else None)
    devices = sweep.job_slots(args.devices, args.cpu_jobs)
    runs = tables.run_and_collect(jobs, devices, args.workdir, collect_only=args.collect_only)
    if runs is None:
        return 130
    rows = ablations.aggregate(runs)
    variants = {name: change for name, (change, _) in ablations.VARIANTS.items()}
    path = tables.write_outputs(
        args.workdir, "ablations", "SINE's switches, one at a time",
        ablations.markdown_table(rows, ks, metrics),
        {"ks": ks, "variants": variants, "rows": rows}, config_spec=args.config, sets=args.set,
        config=config, seeds=sweep.parse_seeds(args.seeds), runs=runs)
    return tables.report(runs, f"table in {path}")


if __name__ == "__main__":
    sys.exit(main())
