"""The paper's Table 1 on one dataset: every model over several seeds, as mean ± std.

  python launch/paper_table.py --config=configs/movielens.py --workdir=runs/table1_ml1m \
      --seeds=0,1,2 --set=data.path=../shared/data/ml-1m-subset/ratings_cs100_subset.dat
  python launch/paper_table.py --config=configs/movielens.py --workdir=runs/table1_ml1m \
      --seeds=0,1,2 --models=sasrec,sine,sine_cate,sine_label \
      --set=data.path=../shared/data/ml-1m-subset/ratings_cs100_subset.dat
  python launch/paper_table.py --config=configs/movielens.py --workdir=runs/table1_ml1m \
      --seeds=0,1,2 --collect_only   # the table from the runs already there; runs nothing

Runs launch/sweep.py's grid model.name x train.seed (--models, default the Table 1 models
pop gru4rec caser sasrec mind mcprn comirec_sa sine), one job per point in
WORKDIR/name-MODEL_seed-SEED; --set adds an override to every job, --devices picks the GPUs (--cpu_jobs: jobs at a time on CPU).
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

import argparse
import datetime
import json
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from launch import sweep  # noqa: E402

MODEL_ORDER = ("pop", "gru4rec", "caser", "sasrec", "mind", "mcprn", "comirec_sa", "sine",
               "sine_cate", "sine_label")
TABLE1_MODELS = MODEL_ORDER[:8]
LABELS = {"pop": "Pop", "gru4rec": "GRU4Rec", "caser": "Caser", "sasrec": "SASRec",
          "mind": "MIND", "mcprn": "MCPRN", "comirec_sa": "ComiRec-SA", "sine": "SINE",
          "sine_cate": "SINE-cate", "sine_label": "SINE-label"}
PAPER_TITLE = "paper (Tan et al. 2021, full ML-1M)"
# Tan et al., WSDM 2021, Table 1, MovieLens: HR@10 NDCG@10 HR@50 NDCG@50 in percent.
PAPER_ML1M = {
    model: dict(zip(("HR@10", "NDCG@10", "HR@50", "NDCG@50"), values))
    for model, values in (
        ("gru4rec", (14.61, 5.66, 41.61, 10.66)),
        ("caser", (15.44, 6.13, 43.64, 11.53)),
        ("sasrec", (17.34, 7.84, 46.01, 13.53)),
        ("mind", (15.62, 6.58, 43.98, 12.30)),
        ("mcprn", (15.82, 6.77, 44.21, 12.83)),
        ("sine", (16.34, 7.06, 45.79, 13.50)),
    )
}


# ---------------------------------------------------------------------------------------------
# Arguments and the effective config.


def load_config(spec: str, sets: list[str]):
    """The ConfigDict a job gets: CONFIG with the FIELD=VALUE overrides parsed as
    `python -m sine_jax.main --config=CONFIG --config.FIELD=VALUE` parses them."""
    base = sweep.load_config(spec)
    overrides = dict(sweep.parse_override(text, "--set") for text in sets)
    for field in overrides:
        sweep.check_field(base, field)
    return sweep.config_from_args(spec, overrides)


def parse_models(text: str | None) -> list[str]:
    """'sine,pop' -> ['pop', 'sine'] (the paper's order); None -> the Table 1 models."""
    if text is None:
        return list(TABLE1_MODELS)
    return sweep.parse_names(text, "--models", MODEL_ORDER)


def parse_ks(text: str, flag: str = "--ks") -> tuple[int, ...]:
    values = sweep.split_values(text)
    if not all(re.fullmatch(r"[1-9]\d*", v) for v in values) or len(set(values)) < len(values):
        raise sweep.SweepError(f"{flag}={text!r}: expected distinct positive integers, e.g. 10,50")
    return tuple(int(v) for v in values)


def metric_names(config) -> tuple[str, ...]:
    """The metric families of a run's results: HR, NDCG (leave-one-out) or Recall, NDCG,
    HitRate (held-out users)."""
    return ("Recall", "NDCG", "HitRate") if config.data.split == "held_out_users" else ("HR", "NDCG")


def table_layout(config, ks: tuple[int, ...] | None = None):
    """(ks, metric families, paper numbers or None) of the table for CONFIG's data."""
    if ks is None:
        ks = (10, 50) if config.data.format in ("movielens", "synthetic") else (50, 100)
    missing = [k for k in ks if k not in config.eval.ks]
    if missing:
        raise sweep.SweepError(f"column cut-off {missing[0]} is not among the runs' eval.ks "
                               f"{tuple(config.eval.ks)}: give --ks (or --set=eval.ks=...)")
    paper = (PAPER_ML1M if config.data.format == "movielens" and config.eval.mask_history
             and config.data.split == "leave_one_out" else None)  # the paper's protocol only
    return tuple(ks), metric_names(config), paper


def protocol(config) -> str:
    """The evaluation protocol of CONFIG in one sentence."""
    history = ("excluded from the ranking" if config.eval.mask_history
               else "ranked with the other items")
    return (f"{config.data.split} split, full ranking over all items, each user's history "
            f"{history} (eval.mask_history={config.eval.mask_history}); test metrics at the "
            f"best validation {config.eval.metric}")


# ---------------------------------------------------------------------------------------------
# Runs on disk and their aggregates (pure functions on results dicts).


def collect_runs(jobs: list[sweep.Job], sweep_dir: str) -> list[dict]:
    """Each job's state on disk: status done (results.json), failed (sweep.json says so),
    incomplete (started: a log but no results) or missing (never started); `results` is the
    results.json dict or None, `error` the failure's last log line."""
    try:
        with open(os.path.join(sweep_dir, "sweep.json")) as f:
            entries = {entry["name"]: entry for entry in json.load(f)["jobs"]}
    except (OSError, ValueError, KeyError):
        entries = {}
    runs = []
    for job in jobs:
        run = {"name": job.name, "workdir": job.workdir, "overrides": job.overrides,
               "status": "missing", "results": None, "error": None}
        log = os.path.join(job.workdir, "log.txt")
        if sweep.is_done(job):
            with open(sweep.results_path(job)) as f:
                run.update(status="done", results=json.load(f))
        elif entries.get(job.name, {}).get("status") == "failed":
            entry = entries[job.name]
            run.update(status="failed", error=f"exit {entry['returncode']}: {entry['error']}")
        elif os.path.isfile(log):
            run.update(status="incomplete", error=sweep.last_line(log))
        runs.append(run)
    return runs


def run_record(run: dict) -> dict:
    """A run as table.json lists it: its job, status and metrics (fractions)."""
    results = run["results"] or {}
    return {**{key: run[key] for key in ("name", "workdir", "overrides", "status", "error")},
            **{key: results[key] for key in ("test", "valid", "best_step", "wall_seconds")
               if key in results}}


def mean_std(values: list[float]) -> dict:
    """{"mean", "std" (sample std, None for one value), "n"} of some seeds' values."""
    array = np.asarray(values, np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else None
    return {"mean": float(array.mean()), "std": std, "n": len(array)}


def summarise(runs: list[dict]) -> dict:
    """The seeds of one table cell or row: stats of every test and valid metric over the done
    runs, the mean wall time, and the runs that did not finish."""
    done = [run["results"] for run in runs if run["status"] == "done"]
    summary = {"seeds": [int(run["overrides"][sweep.SEED_FIELD]) for run in runs],
               "done": len(done),
               "not_done": [{"seed": int(run["overrides"][sweep.SEED_FIELD]),
                             "status": run["status"], "error": run["error"]}
                            for run in runs if run["status"] != "done"]}
    for split in ("test", "valid"):
        names = sorted({name for results in done for name in results.get(split, {})})
        summary[split] = {name: mean_std([r[split][name] for r in done if name in r[split]])
                          for name in names}
    walls = [r["wall_seconds"] for r in done if "wall_seconds" in r]
    summary["wall_seconds"] = float(np.mean(walls)) if walls else None
    return summary


def aggregate(runs: list[dict]) -> list[dict]:
    """One row per model of the runs, in the paper's order: {"model", **summarise(its runs)}."""
    models = sorted({run["overrides"]["model.name"] for run in runs}, key=MODEL_ORDER.index)
    return [{"model": model, **summarise([r for r in runs if r["overrides"]["model.name"] == model])}
            for model in models]


def format_cell(stats: dict | None) -> str:
    """A metric's {"mean", "std"} (fractions) as 'mean ± std' in percent."""
    if stats is None:
        return "n/a"
    text = f"{100 * stats['mean']:.2f}"
    return text if stats["std"] is None else f"{text} ± {100 * stats['std']:.2f}"


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def status_cell(summary: dict) -> str:
    """What stands in a metric cell when no seed finished: the runs' statuses."""
    return "/".join(sorted({entry["status"] for entry in summary["not_done"]}))


def not_done_lines(label: str, summary: dict) -> list[str]:
    return [f"- {label}, seed {entry['seed']}: {entry['status']}"
            + (f" ({entry['error']})" if entry["error"] else "") for entry in summary["not_done"]]


def markdown_table(rows: list[dict], ks: tuple[int, ...], metrics=("HR", "NDCG"),
                   paper: dict | None = None) -> str:
    """The rows of `aggregate` as a Markdown table (test metrics, percent), then the paper's
    block when `paper` is given, then a list of the runs that did not finish."""
    columns = [f"{name}@{k}" for k in ks for name in metrics]
    lines = ["| model | " + " | ".join(columns) + " | seeds | mean wall time |",
             "|---" * (len(columns) + 3) + "|"]
    notes = []
    for row in rows:
        label = LABELS[row["model"]]
        if row["done"]:
            cells = [format_cell(row["test"].get(column)) for column in columns]
        else:
            cells = [status_cell(row)] * len(columns)
        seeds = f"{row['done']}/{len(row['seeds'])}"
        lines.append(f"| {label} | " + " | ".join(cells)
                     + f" | {seeds} | {format_seconds(row['wall_seconds'])} |")
        notes += not_done_lines(label, row)
    if paper:
        lines.append(f"| **{PAPER_TITLE}** |" + " |" * (len(columns) + 2))
        for model, numbers in paper.items():
            cells = [f"{numbers[c]:.2f}" if c in numbers else "" for c in columns]
            lines.append(f"| {LABELS[model]} | " + " | ".join(cells) + " | | |")
    if notes:
        lines += ["", "Runs that did not finish (not in the means):", *notes]
    return "\n".join(lines) + "\n"


def header(title: str, spec: str, sets: list[str], config, seeds: list[str]) -> str:
    """The lines above a table: what was run, under which protocol, when."""
    overrides = ", ".join(f"`{text}`" for text in sets) or "none"
    lines = [f"# {title}", "",
             f"- config: `{spec}`; overrides: {overrides}",
             f"- data: {config.data.format} `{config.data.path or '(built in)'}`",
             f"- protocol: {protocol(config)}",
             (f"- seeds: {', '.join(seeds)} (train.seed); cells: mean ± sample std in percent "
              "over the seeds that finished"),
             f"- date: {datetime.date.today().isoformat()}"]
    return "\n".join(lines) + "\n\n"


# ---------------------------------------------------------------------------------------------


def table_parser(description: str, workdir_help: str) -> argparse.ArgumentParser:
    """The flags every run-and-tabulate launch script shares (paper_table, sensitivity,
    ablations): --config, --workdir, --seeds, --set, --devices, --cpu_jobs, --collect_only."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="config file[:arg], as for sine_jax.main")
    parser.add_argument("--workdir", required=True, help=workdir_help)
    parser.add_argument("--seeds", default="0,1,2", help="train.seed values (default 0,1,2)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="an override for every job (repeatable)")
    sweep.add_slot_flags(parser)
    parser.add_argument("--collect_only", action="store_true",
                        help="write the outputs from the runs there, run nothing")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = table_parser(__doc__.split("\n")[0], "the table's directory")
    parser.add_argument("--models", help="model.name values (default the Table 1 models)")
    parser.add_argument("--ks", help="cut-offs of the columns, e.g. 10,50 (default by data)")
    return parser.parse_args(argv)


def run_jobs(jobs, devices: list[str | None], workdir: str) -> bool:
    """Runs `jobs` (sweep.py: one per slot of `sweep.job_slots` at a time; done jobs skipped);
    False when interrupted (a rerun resumes)."""
    try:
        sweep.run_sweep(jobs, devices, workdir)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        models = parse_models(args.models)
        jobs = sweep.plan(argparse.Namespace(
            config=args.config, workdir=args.workdir, seeds=args.seeds, set=args.set,
            grid=[f"model.name={','.join(models)}"]))
        config = load_config(args.config, args.set)
        ks, metrics, paper = table_layout(config, parse_ks(args.ks) if args.ks else None)
        devices = sweep.job_slots(args.devices, args.cpu_jobs)
    except sweep.SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.workdir, exist_ok=True)
    if not args.collect_only and not run_jobs(jobs, devices, args.workdir):
        return 130
    runs = collect_runs(jobs, args.workdir)
    rows = aggregate(runs)
    seeds = sweep.parse_seeds(args.seeds)
    with open(os.path.join(args.workdir, "table.md"), "w") as f:
        f.write(header("Table 1", args.config, args.set, config, seeds)
                + markdown_table(rows, ks, metrics, paper))
    sweep.write_json_atomic(os.path.join(args.workdir, "table.json"), {
        "config": args.config, "overrides": args.set, "protocol": protocol(config),
        "seeds": seeds, "ks": ks, "metrics": metrics, "date": datetime.date.today().isoformat(),
        "runs": [run_record(run) for run in runs], "rows": rows, "paper": paper})
    done = sum(run["status"] == "done" for run in runs)
    print(f"{done}/{len(runs)} runs finished; table in {os.path.join(args.workdir, 'table.md')}")
    return 1 if any(run["status"] == "failed" for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
