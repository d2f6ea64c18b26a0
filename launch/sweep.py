"""A grid of training runs: one `sine_jax.main` job per point, each in its own workdir.

  python launch/sweep.py --config=configs/movielens.py --workdir=runs/sweep_kl \
      --grid=model.num_interests=2,4,8 --grid=model.num_prototypes=10,50,100,500 \
      --seeds=0,1,2 --set=data.path=data/ml-1m-subset.dat

The jobs are the Cartesian product of the --grid axes (and of --seeds, as train.seed); --set
adds the same override to every job. Values go to the training CLI as written (a value with
commas inside brackets stays whole: --grid='eval.ks=(10,50),(20,50)'). Job
`model.num_interests=4, model.num_prototypes=50, train.seed=0` runs in
WORKDIR/num_interests-4_num_prototypes-50_seed-0 and writes its output to log.txt there.

Rerunning the same command resumes the sweep: a job whose workdir has results.json is
skipped, an interrupted one resumes from its checkpoints. A finished job whose recorded config
differs from what its command would train now (a preset changed, another --set) stops the
sweep before anything runs, naming the job and the fields: its results would be stale. With
several GPUs visible (CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`; or --devices=0,1,...) one
job runs per GPU at a time, each seeing only its GPU; on CPU --cpu_jobs jobs (default 1) run at
a time. The jobs share WORKDIR/cache (preprocessed data, unless data.cache_dir is set) and
WORKDIR/jax_cache (compiled programs, unless JAX_COMPILATION_CACHE_DIR is set).
WORKDIR/sweep.json lists every job with its overrides, status (done, failed, skipped or
pending), test and valid metrics and wall_seconds. Exit code: 0 when no job failed, 1 when one
did, 2 for a bad argument (nothing runs), 130 when interrupted (Ctrl-C stops the running jobs;
a rerun resumes them).
"""

import os
import shlex
import sys

from absl import flags

from sine_jax import cli
from sine_jax.experiments import sweep


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_string("config", None, "config file[:arg], as for sine_jax.main",
                        flag_values=flag_values)
    flags.DEFINE_string("workdir", None, "the sweep's directory", flag_values=flag_values)
    flags.DEFINE_multi_string("grid", [], "FIELD=V1,V2,...: one axis of the grid (repeatable)",
                              flag_values=flag_values)
    flags.DEFINE_string("seeds", None, "train.seed values, e.g. 0,1,2 (one more axis)",
                        flag_values=flag_values)
    flags.DEFINE_multi_string("set", [], "FIELD=VALUE: an override for every job (repeatable)",
                              flag_values=flag_values)
    sweep.define_slot_flags(flag_values)
    flags.DEFINE_bool("dry_run", False, "print the jobs, run nothing", flag_values=flag_values)
    flags.mark_flags_as_required(["config", "workdir"], flag_values=flag_values)


@cli.tool
def main(argv: list[str] | None = None) -> int:
    args = cli.parse_flags(define_flags, argv, __doc__)
    jobs = sweep.plan(args.config, args.workdir, grid=args.grid, seeds=args.seeds,
                      sets=args.set)
    devices = sweep.job_slots(args.devices, args.cpu_jobs)
    if args.dry_run:
        for job in jobs:
            print(f"{'skip' if sweep.is_done(job) else 'run'}: {shlex.join(job.command)}")
        return 0
    os.makedirs(args.workdir, exist_ok=True)
    try:
        entries = sweep.run_sweep(jobs, devices, args.workdir)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    failed = [entry["name"] for entry in entries if entry["status"] == "failed"]
    print(f"{len(entries) - len(failed)}/{len(entries)} jobs done"
          + (f"; failed: {', '.join(failed)}" if failed else "")
          + f"; summary in {os.path.join(args.workdir, 'sweep.json')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
