"""The paper's Figure 4 analogue: SINE's test metrics over K (interests) x L (prototypes).

  python launch/sensitivity.py --config=configs/movielens.py --workdir=runs/fig4_ml1m \
      --seeds=0,1,2 --set=data.path=../shared/data/ml-1m-subset/ratings_cs100_subset.dat
  python launch/sensitivity.py --config=configs/movielens.py --workdir=runs/fig4_ml1m \
      --ks_interests=2,4,8 --prototypes=10,50,100,500 --metric=HR@50 --second_metric=NDCG@50 \
      --seeds=0,1,2 --set=data.path=../shared/data/ml-1m-subset/ratings_cs100_subset.dat
  python launch/sensitivity.py --config=configs/movielens.py --workdir=runs/fig4_ml1m \
      --seeds=0,1,2 --collect_only   # the figure from the runs already there; runs nothing

Runs launch/sweep.py's grid model.num_interests (K, --ks_interests) x model.num_prototypes
(L, --prototypes) x train.seed, leaving out the cells with K > L (SINE needs K <= L), one job
per point in WORKDIR/num_interests-K_num_prototypes-L_seed-S (the names of the same grid run
by sweep.py itself, so its runs are reused); --set adds an override to every job. Rerunning
the same command resumes. Then it writes

  WORKDIR/heatmap.png        one panel per metric, K rows x L columns, the test metric in
                             percent (mean over the seeds that finished) written in each cell
  WORKDIR/sensitivity.md     the same as tables, "mean ± std" (sample std), with every run
                             that did not finish listed
  WORKDIR/sensitivity.json   every run's metrics (fractions) and the cells' aggregates

Exit code: 0 when every job finished, 1 when one failed, 2 for a bad argument, 130 when
interrupted (rerun to resume).
"""

import argparse
import datetime
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from launch import paper_table, sweep  # noqa: E402

K_FIELD, L_FIELD = "model.num_interests", "model.num_prototypes"


def plan(config_spec: str, workdir: str, ks_interests: tuple[int, ...],
         prototypes: tuple[int, ...], seeds: str, sets: list[str]) -> list[sweep.Job]:
    """The sweep's jobs of the K x L x seed grid without the cells where K > L."""
    jobs = sweep.plan(argparse.Namespace(
        config=config_spec, workdir=workdir, seeds=seeds, set=sets,
        grid=[f"{K_FIELD}={','.join(map(str, ks_interests))}",
              f"{L_FIELD}={','.join(map(str, prototypes))}"]))
    return [job for job in jobs if int(job.overrides[K_FIELD]) <= int(job.overrides[L_FIELD])]


def aggregate(runs: list[dict], ks_interests: tuple[int, ...],
              prototypes: tuple[int, ...]) -> list[dict]:
    """One cell per (K, L), K-major: {"K", "L", "skipped": K > L, **summarise(its runs)}."""
    cells = []
    for k in ks_interests:
        for num_prototypes in prototypes:
            cell = {"K": k, "L": num_prototypes, "skipped": k > num_prototypes}
            if not cell["skipped"]:
                mine = [run for run in runs if int(run["overrides"][K_FIELD]) == k
                        and int(run["overrides"][L_FIELD]) == num_prototypes]
                cell.update(paper_table.summarise(mine))
            cells.append(cell)
    return cells


def cell_text(cell: dict, metric: str) -> str:
    """'mean ± std' in percent; '(done/planned)' after it when some seeds did not finish."""
    if cell["skipped"]:
        return "— (K > L)"
    if not cell["done"]:
        return paper_table.status_cell(cell)
    text = paper_table.format_cell(cell["test"].get(metric))
    return text if not cell["not_done"] else f"{text} ({cell['done']}/{len(cell['seeds'])})"


def markdown_tables(cells: list[dict], ks_interests, prototypes, metrics) -> str:
    """One Markdown table per metric (K rows x L columns, test, percent), then the runs that
    did not finish."""
    lines = []
    for metric in metrics:
        lines += [f"## test {metric} (%)", "",
                  "| K \\ L | " + " | ".join(map(str, prototypes)) + " |",
                  "|---" * (len(prototypes) + 1) + "|"]
        for k in ks_interests:
            row = [cell_text(c, metric) for c in cells if c["K"] == k]
            lines.append(f"| {k} | " + " | ".join(row) + " |")
        lines.append("")
    notes = [line for c in cells if not c["skipped"]
             for line in paper_table.not_done_lines(f"K={c['K']}, L={c['L']}", c)]
    if notes:
        lines += ["Runs that did not finish (not in the means):", *notes, ""]
    return "\n".join(lines)


def plot_heatmap(cells: list[dict], ks_interests, prototypes, metrics, path: str) -> None:
    """Writes PATH (PNG): one annotated K x L heatmap of the test metric (%) per metric; cells
    with K > L or no finished seed are grey and say why."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(1, len(metrics), squeeze=False,
                                figsize=(1.6 * len(prototypes) * len(metrics) + 1.5,
                                         0.9 * len(ks_interests) + 1.6))
    for ax, metric in zip(axes[0], metrics):
        means = np.full((len(ks_interests), len(prototypes)), np.nan)
        for c in cells:
            i, j = ks_interests.index(c["K"]), prototypes.index(c["L"])
            if not c["skipped"] and c["done"] and metric in c["test"]:
                means[i, j] = 100 * c["test"][metric]["mean"]
        colours = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
        image = ax.imshow(np.ma.masked_invalid(means), cmap=colours, aspect="auto")
        figure.colorbar(image, ax=ax, fraction=0.05)
        for c in cells:
            i, j = ks_interests.index(c["K"]), prototypes.index(c["L"])
            text = (cell_text(c, metric).replace(" ± ", "\n± ") if np.isfinite(means[i, j])
                    else cell_text(c, metric).replace(" (", "\n("))
            light = not np.isfinite(means[i, j]) or image.norm(means[i, j]) > 0.6
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="black" if light else "white")
        ax.set_xticks(range(len(prototypes)), [str(p) for p in prototypes])
        ax.set_yticks(range(len(ks_interests)), [str(k) for k in ks_interests])
        ax.set_xlabel("L (prototypes)")
        ax.set_ylabel("K (interests)")
        ax.set_title(f"test {metric} (%)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def check_metric(text: str, config) -> str:
    """METRIC@N with a metric family of the runs and N among eval.ks; SweepError otherwise."""
    name, _, k = text.partition("@")
    families = paper_table.metric_names(config)
    if name not in families or not k.isdigit() or int(k) not in config.eval.ks:
        raise sweep.SweepError(f"metric {text!r}: expected one of {', '.join(families)} @ one "
                               f"of eval.ks {tuple(config.eval.ks)}, e.g. {families[0]}@50")
    return text


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = paper_table.table_parser(__doc__.split("\n")[0], "the sweep's directory")
    parser.add_argument("--ks_interests", default="2,4,8", help="K values (model.num_interests)")
    parser.add_argument("--prototypes", default="10,50,100,500",
                        help="L values (model.num_prototypes)")
    parser.add_argument("--metric", default="HR@50", help="the first panel's test metric")
    parser.add_argument("--second_metric", default="NDCG@50", help="the second panel's")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        ks_interests = paper_table.parse_ks(args.ks_interests, "--ks_interests")
        prototypes = paper_table.parse_ks(args.prototypes, "--prototypes")
        jobs = plan(args.config, args.workdir, ks_interests, prototypes, args.seeds, args.set)
        if not jobs:
            raise sweep.SweepError("every cell has K > L: give smaller --ks_interests or "
                                   "larger --prototypes")
        config = paper_table.load_config(args.config, args.set)
        metrics = [check_metric(m, config) for m in dict.fromkeys([args.metric,
                                                                   args.second_metric])]
        devices = sweep.job_slots(args.devices, args.cpu_jobs)
    except sweep.SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.workdir, exist_ok=True)
    if not args.collect_only and not paper_table.run_jobs(jobs, devices, args.workdir):
        return 130
    runs = paper_table.collect_runs(jobs, args.workdir)
    cells = aggregate(runs, ks_interests, prototypes)
    seeds = sweep.parse_seeds(args.seeds)
    plot_heatmap(cells, ks_interests, prototypes, metrics,
                 os.path.join(args.workdir, "heatmap.png"))
    with open(os.path.join(args.workdir, "sensitivity.md"), "w") as f:
        f.write(paper_table.header("Sensitivity to K and L (Figure 4)", args.config, args.set,
                                   config, seeds)
                + markdown_tables(cells, ks_interests, prototypes, metrics))
    sweep.write_json_atomic(os.path.join(args.workdir, "sensitivity.json"), {
        "config": args.config, "overrides": args.set, "protocol": paper_table.protocol(config),
        "seeds": seeds, "ks_interests": ks_interests, "prototypes": prototypes,
        "metrics": metrics, "date": datetime.date.today().isoformat(),
        "runs": [paper_table.run_record(run) for run in runs], "cells": cells})
    done = sum(run["status"] == "done" for run in runs)
    print(f"{done}/{len(runs)} runs finished; heatmap in "
          f"{os.path.join(args.workdir, 'heatmap.png')}")
    return 1 if any(run["status"] == "failed" for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
