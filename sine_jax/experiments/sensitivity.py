"""The paper's Figure 4 analogue: SINE's test metrics over K (interests) x L (prototypes),
as tables and an annotated heat map (`launch/sensitivity.py` runs it).

The grid is model.num_interests (K) x model.num_prototypes (L) x train.seed without the cells
with K > L (SINE needs K <= L); its job names are those of the same grid run by
`launch/sweep.py` itself, so those runs are reused.
"""

import numpy as np

from sine_jax.errors import import_optional
from sine_jax.experiments import sweep, tables

K_FIELD, L_FIELD = "model.num_interests", "model.num_prototypes"


def plan(config_spec: str, workdir: str, ks_interests: tuple[int, ...],
         prototypes: tuple[int, ...], seeds: str, sets: list[str]) -> list[sweep.Job]:
    """The sweep's jobs of the K x L x seed grid without the cells where K > L."""
    jobs = sweep.plan(config_spec, workdir, seeds=seeds, sets=sets,
                      grid=[f"{K_FIELD}={','.join(map(str, ks_interests))}",
                            f"{L_FIELD}={','.join(map(str, prototypes))}"])
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
                cell.update(tables.summarise(mine))
            cells.append(cell)
    return cells


def cell_text(cell: dict, metric: str) -> str:
    """'mean ± std' in percent; '(done/planned)' after it when some seeds did not finish."""
    if cell["skipped"]:
        return "— (K > L)"
    if not cell["done"]:
        return tables.status_cell(cell)
    text = tables.format_cell(cell["test"].get(metric))
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
             for line in tables.not_done_lines(f"K={c['K']}, L={c['L']}", c)]
    if notes:
        lines += ["Runs that did not finish (not in the means):", *notes, ""]
    return "\n".join(lines)


def plot_heatmap(cells: list[dict], ks_interests, prototypes, metrics, path: str) -> None:
    """Writes PATH (PNG): one annotated K x L heatmap of the test metric (%) per metric; cells
    with K > L or no finished seed are grey and say why."""
    import_optional("matplotlib", "analysis").use("Agg")
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
    families = tables.metric_names(config)
    if name not in families or not k.isdigit() or int(k) not in config.eval.ks:
        raise sweep.SweepError(f"metric {text!r}: expected one of {', '.join(families)} @ one "
                               f"of eval.ks {tuple(config.eval.ks)}, e.g. {families[0]}@50")
    return text
