"""The paper's Figure 4 analogue: SINE's test metrics over K (interests) x L (prototypes).

  python launch/sensitivity.py --config=configs/movielens.py --workdir=runs/fig4_ml1m \
      --seeds=0,1,2 --set=data.path=data/ml-1m-subset.dat
  python launch/sensitivity.py --config=configs/movielens.py --workdir=runs/fig4_ml1m \
      --ks_interests=2,4,8 --prototypes=10,50,100,500 --metric=HR@50 --second_metric=NDCG@50 \
      --seeds=0,1,2 --set=data.path=data/ml-1m-subset.dat
  python launch/sensitivity.py --config=configs/movielens.py --workdir=runs/fig4_ml1m \
      --seeds=0,1,2 --collect_only   # the figure from the runs already there; runs nothing

Runs the sweep of launch/sweep.py over model.num_interests (K, --ks_interests) x
model.num_prototypes (L, --prototypes) x train.seed, leaving out the cells with K > L (SINE
needs K <= L), one job per point in WORKDIR/num_interests-K_num_prototypes-L_seed-S (the names
of the same grid run by sweep.py itself, so its runs are reused); --set adds an override to
every job. Rerunning the same command resumes. Then it writes

  WORKDIR/heatmap.png        one panel per metric, K rows x L columns, the test metric in
                             percent (mean over the seeds that finished) written in each cell
  WORKDIR/sensitivity.md     the same as tables, "mean ± std" (sample std), with every run
                             that did not finish listed
  WORKDIR/sensitivity.json   every run's metrics (fractions) and the cells' aggregates

Exit code: 0 when every job finished, 1 when one failed, 2 for a bad argument, 130 when
interrupted (rerun to resume).
"""

import os
import sys

from absl import flags

from sine_jax import cli
from sine_jax.experiments import sensitivity, sweep, tables


def define_flags(flag_values: flags.FlagValues) -> None:
    tables.define_table_flags(flag_values, "the sweep's directory")
    flags.DEFINE_string("ks_interests", "2,4,8", "K values (model.num_interests)",
                        flag_values=flag_values)
    flags.DEFINE_string("prototypes", "10,50,100,500", "L values (model.num_prototypes)",
                        flag_values=flag_values)
    flags.DEFINE_string("metric", "HR@50", "the first panel's test metric",
                        flag_values=flag_values)
    flags.DEFINE_string("second_metric", "NDCG@50", "the second panel's",
                        flag_values=flag_values)


@cli.tool
def main(argv: list[str] | None = None) -> int:
    args = cli.parse_flags(define_flags, argv, __doc__)
    ks_interests = tables.parse_ks(args.ks_interests, "--ks_interests")
    prototypes = tables.parse_ks(args.prototypes, "--prototypes")
    jobs = sensitivity.plan(args.config, args.workdir, ks_interests, prototypes,
                            args.seeds, args.set)
    if not jobs:
        raise sweep.SweepError("every cell has K > L: give smaller --ks_interests or "
                               "larger --prototypes")
    config = tables.load_config(args.config, args.set)
    metrics = [sensitivity.check_metric(m, config)
               for m in dict.fromkeys([args.metric, args.second_metric])]
    devices = sweep.job_slots(args.devices, args.cpu_jobs)
    runs = tables.run_and_collect(jobs, devices, args.workdir, collect_only=args.collect_only)
    if runs is None:
        return 130
    cells = sensitivity.aggregate(runs, ks_interests, prototypes)
    heatmap = os.path.join(args.workdir, "heatmap.png")
    sensitivity.plot_heatmap(cells, ks_interests, prototypes, metrics, heatmap)
    tables.write_outputs(
        args.workdir, "sensitivity", "Sensitivity to K and L (Figure 4)",
        sensitivity.markdown_tables(cells, ks_interests, prototypes, metrics),
        {"ks_interests": ks_interests, "prototypes": prototypes, "metrics": metrics,
         "cells": cells}, config_spec=args.config, sets=args.set, config=config,
        seeds=sweep.parse_seeds(args.seeds), runs=runs)
    return tables.report(runs, f"heatmap in {heatmap}")


if __name__ == "__main__":
    sys.exit(main())
