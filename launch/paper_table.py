"""The paper's Table 1 on one dataset: every model over several seeds, as mean ± std.

  python launch/paper_table.py --config=configs/movielens.py --workdir=runs/table1_ml1m \
      --seeds=0,1,2 --set=data.path=data/ml-1m-subset.dat
  python launch/paper_table.py --config=configs/movielens.py --workdir=runs/table1_ml1m \
      --seeds=0,1,2 --models=sasrec,sine,sine_cate,sine_label \
      --set=data.path=data/ml-1m-subset.dat
  python launch/paper_table.py --config=configs/movielens.py --workdir=runs/table1_ml1m \
      --seeds=0,1,2 --collect_only   # the table from the runs already there; runs nothing

Runs the sweep of launch/sweep.py over model.name (--models, default the Table 1 models pop
gru4rec caser sasrec mind mcprn comirec_sa sine) x train.seed, one job per point in
WORKDIR/name-MODEL_seed-SEED; --set adds an override to every job, --devices picks the GPUs
(--cpu_jobs: jobs at a time on CPU).
--tune=FIELD=V1,V2,... (repeatable) trains every model at each value too (jobs
name-MODEL_dropout-0.2_seed-SEED for --tune=model.dropout=...) and gives each model the
value with the best mean validation metric (`eval.metric`) over the seeds, never the test:
the same tuning for every model, e.g. --tune=model.dropout=0,0.2,0.5. A model's row waits
until one of its settings has finished every seed; the table lists every setting's
validation mean under it.
Rerunning the same command resumes: a job with results.json is skipped. Then it writes

  WORKDIR/table.md    one row per model in the paper's order; test metrics in percent,
                      "mean ± std" (sample std) over the seeds that finished; the seeds
                      finished and the mean wall time; every failed, unfinished or missing
                      run listed under the table; for MovieLens data the paper's numbers
  WORKDIR/table.json  every run's metrics (fractions, as in results.json) and the aggregates

Columns: HR and NDCG at 10 and 50 for data.format movielens or synthetic, at 50 and 100
otherwise (held_out_users: Recall, NDCG and HitRate); --ks=20,50 overrides. Exit code: 0
when every job finished, 1 when one failed, 2 for a bad argument (nothing runs), 130 when
interrupted (rerun to resume).
"""

import sys

from absl import flags

from sine_jax import cli
from sine_jax.experiments import paper_table, sweep, tables


def define_flags(flag_values: flags.FlagValues) -> None:
    tables.define_table_flags(flag_values, "the table's directory")
    flags.DEFINE_string("models", None, "model.name values (default the Table 1 models)",
                        flag_values=flag_values)
    flags.DEFINE_string("ks", None, "cut-offs of the columns, e.g. 10,50 (default by data)",
                        flag_values=flag_values)
    flags.DEFINE_multi_string(
        "tune", [], "FIELD=V1,V2,...: every model at each value; its row is the value with the "
        "best mean validation metric (repeatable: the grid of several fields)",
        flag_values=flag_values)


@cli.tool
def main(argv: list[str] | None = None) -> int:
    args = cli.parse_flags(define_flags, argv, __doc__)
    models = paper_table.parse_models(args.models)
    tuned = [sweep.parse_axis(text, "--tune")[0] for text in args.tune]
    jobs = sweep.plan(args.config, args.workdir, seeds=args.seeds, sets=args.set,
                      grid=[f"model.name={','.join(models)}", *args.tune])
    config = tables.load_config(args.config, args.set)
    ks, metrics, paper = paper_table.table_layout(
        config, tables.parse_ks(args.ks) if args.ks else None)
    devices = sweep.job_slots(args.devices, args.cpu_jobs)
    runs = tables.run_and_collect(jobs, devices, args.workdir, collect_only=args.collect_only)
    if runs is None:
        return 130
    rows = paper_table.aggregate(runs, tuned, config.eval.metric)
    path = tables.write_outputs(
        args.workdir, "table", "Table 1", paper_table.markdown_table(rows, ks, metrics, paper),
        {"ks": ks, "metrics": metrics, "rows": rows, "paper": paper, "tuned": tuned,
         "selection_metric": config.eval.metric}, config_spec=args.config,
        sets=args.set, config=config, seeds=sweep.parse_seeds(args.seeds), runs=runs)
    return tables.report(runs, f"table in {path}")


if __name__ == "__main__":
    sys.exit(main())
