"""What the run-and-tabulate tools share (Table 1, Figure 4, the switch ablations): the
effective config of a table's jobs, the runs on disk, their aggregates over seeds (mean and
sample std) and their Markdown cells. Metrics stay fractions in JSON, percent in Markdown.
"""

import datetime
import json
import os
import re

import numpy as np
from absl import flags

from sine_jax.experiments import sweep
from sine_jax.workdir import write_json_atomic


def load_config(spec: str, sets: list[str]):
    """The ConfigDict a job gets: CONFIG with the FIELD=VALUE overrides parsed as
    `python -m sine_jax.main --config=CONFIG --config.FIELD=VALUE` parses them."""
    base = sweep.load_config(spec)
    overrides = dict(sweep.parse_override(text, "--set") for text in sets)
    for field in overrides:
        sweep.check_field(base, field)
    return sweep.config_from_args(spec, overrides)


def parse_ks(text: str, flag: str = "--ks") -> tuple[int, ...]:
    values = sweep.split_values(text)
    if not all(re.fullmatch(r"[1-9]\d*", v) for v in values) or len(set(values)) < len(values):
        raise sweep.SweepError(f"{flag}={text!r}: expected distinct positive integers, e.g. 10,50")
    return tuple(int(v) for v in values)


def metric_names(config) -> tuple[str, ...]:
    """The metric families of a run's results: HR, NDCG (leave-one-out) or Recall, NDCG,
    HitRate (held-out users)."""
    held_out = config.data.split == "held_out_users"
    return ("Recall", "NDCG", "HitRate") if held_out else ("HR", "NDCG")


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


def run_and_collect(jobs: list[sweep.Job], devices: list[str | None], workdir: str, *,
                    collect_only: bool) -> list[dict] | None:
    """Runs the jobs not done yet (none with `collect_only`), then `collect_runs`; None when
    interrupted (a rerun resumes)."""
    os.makedirs(workdir, exist_ok=True)
    if not collect_only and not sweep.run_jobs(jobs, devices, workdir):
        return None
    return collect_runs(jobs, workdir)


def write_outputs(workdir: str, name: str, title: str, body: str, fields: dict, *,
                  config_spec: str, sets: list[str], config, seeds: list[str],
                  runs: list[dict]) -> str:
    """Writes WORKDIR/NAME.md (`header` above BODY) and WORKDIR/NAME.json (what every table
    records: config, overrides, protocol, seeds, date, every run; then FIELDS); returns the
    Markdown file's path."""
    path = os.path.join(workdir, f"{name}.md")
    with open(path, "w") as f:
        f.write(header(title, config_spec, sets, config, seeds) + body)
    write_json_atomic(os.path.join(workdir, f"{name}.json"), {
        "config": config_spec, "overrides": sets, "protocol": protocol(config), "seeds": seeds,
        "date": datetime.date.today().isoformat(), "runs": [run_record(run) for run in runs],
        **fields})
    return path


def report(runs: list[dict], where: str) -> int:
    """Prints 'D/N runs finished; WHERE'; the exit code: 1 when a run failed, else 0."""
    done = sum(run["status"] == "done" for run in runs)
    print(f"{done}/{len(runs)} runs finished; {where}")
    return 1 if any(run["status"] == "failed" for run in runs) else 0


def define_table_flags(flag_values: flags.FlagValues, workdir_help: str) -> None:
    """The flags every run-and-tabulate launch tool shares (paper_table, sensitivity,
    ablations): --config, --workdir, --seeds, --set, --devices, --cpu_jobs, --collect_only."""
    flags.DEFINE_string("config", None, "config file[:arg], as for sine_jax.main",
                        flag_values=flag_values)
    flags.DEFINE_string("workdir", None, workdir_help, flag_values=flag_values)
    flags.DEFINE_string("seeds", "0,1,2", "train.seed values", flag_values=flag_values)
    flags.DEFINE_multi_string("set", [], "FIELD=VALUE: an override for every job (repeatable)",
                              flag_values=flag_values)
    sweep.define_slot_flags(flag_values)
    flags.DEFINE_bool("collect_only", False, "write the outputs from the runs there, run nothing",
                      flag_values=flag_values)
    flags.mark_flags_as_required(["config", "workdir"], flag_values=flag_values)
