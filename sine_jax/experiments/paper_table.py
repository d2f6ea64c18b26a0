"""The paper's Table 1 on one dataset: every model over several seeds, as mean ± std, with
the paper's own numbers beside MovieLens tables (`launch/paper_table.py` runs it)."""

from collections.abc import Sequence

from sine_jax.experiments import sweep, tables

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


def parse_models(text: str | None) -> list[str]:
    """'sine,pop' -> ['pop', 'sine'] (the paper's order); None -> the Table 1 models."""
    if text is None:
        return list(TABLE1_MODELS)
    return sweep.parse_names(text, "--models", MODEL_ORDER)


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
    return tuple(ks), tables.metric_names(config), paper


def aggregate(runs: list[dict], tuned: Sequence[str] = (), metric: str = "HR@10") -> list[dict]:
    """One row per model of the runs, in the paper's order: {"model", **tables.summarise(its
    runs)}.

    With `tuned` fields (each model trained at every value of their grid), a model's row is
    its setting of them with the best mean validation `metric` over the seeds, among the
    settings whose every seed finished (the first in grid order on a tie), never chosen on
    test: {"model", "chosen": {field: value} or None while no setting has finished,
    "candidates": [{"values", "done", "seeds", "valid"}] (valid: that setting's mean
    validation `metric`, None until a seed finished), **tables.summarise(the chosen runs)}.
    """
    models = sorted({run["overrides"]["model.name"] for run in runs}, key=MODEL_ORDER.index)
    rows = []
    for model in models:
        mine = [r for r in runs if r["overrides"]["model.name"] == model]
        if not tuned:
            rows.append({"model": model, **tables.summarise(mine)})
            continue
        settings: dict[tuple, list[dict]] = {}
        for run in mine:
            settings.setdefault(tuple(run["overrides"][f] for f in tuned), []).append(run)
        candidates, best = [], None
        for values, group in settings.items():
            summary = tables.summarise(group)
            valid = summary["valid"].get(metric, {}).get("mean")
            candidates.append({"values": dict(zip(tuned, values)), "done": summary["done"],
                               "seeds": summary["seeds"], "valid": valid})
            complete = summary["done"] == len(summary["seeds"])
            if complete and valid is not None and (best is None or valid > best[0]):
                best = (valid, values, summary)
        if best is None:
            summary = {**tables.summarise([]), "not_done": tables.summarise(mine)["not_done"]}
            rows.append({"model": model, "chosen": None, "candidates": candidates, **summary})
        else:
            rows.append({"model": model, "chosen": dict(zip(tuned, best[1])),
                         "candidates": candidates, **best[2]})
    return rows


def markdown_table(rows: list[dict], ks: tuple[int, ...], metrics=("HR", "NDCG"),
                   paper: dict | None = None) -> str:
    """The rows of `aggregate` as a Markdown table (test metrics, percent), then the paper's
    block when `paper` is given, then a list of the runs that did not finish."""
    columns = [f"{name}@{k}" for k in ks for name in metrics]
    tuned = any("chosen" in row for row in rows)
    chosen_column = ["chosen on validation"] if tuned else []
    lines = ["| model | " + " | ".join(chosen_column + columns) + " | seeds | mean wall time |",
             "|---" * (len(columns) + len(chosen_column) + 3) + "|"]
    notes, choices = [], []
    for row in rows:
        label = LABELS[row["model"]]
        if row["done"]:
            cells = [tables.format_cell(row["test"].get(column)) for column in columns]
        else:
            cells = [tables.status_cell(row)] * len(columns)
        if tuned:
            chosen = row.get("chosen")
            cells = [", ".join(f"{f}={v}" for f, v in chosen.items()) if chosen
                     else "pending"] + cells
            choices.append(f"- {label}: " + "; ".join(
                ", ".join(f"{f}={v}" for f, v in c["values"].items())
                + (f" {100 * c['valid']:.2f}" if c["valid"] is not None else " —")
                + f" ({c['done']}/{len(c['seeds'])} seeds)" for c in row.get("candidates", [])))
        seeds = f"{row['done']}/{len(row['seeds'])}"
        lines.append(f"| {label} | " + " | ".join(cells)
                     + f" | {seeds} | {tables.format_seconds(row['wall_seconds'])} |")
        notes += tables.not_done_lines(label, row)
    if paper:
        lines.append(f"| **{PAPER_TITLE}** |" + " |" * (len(columns) + len(chosen_column) + 2))
        for model, numbers in paper.items():
            cells = [""] * len(chosen_column) + [
                f"{numbers[c]:.2f}" if c in numbers else "" for c in columns]
            lines.append(f"| {LABELS[model]} | " + " | ".join(cells) + " | | |")
    if tuned:
        lines += ["", "Each model at its setting with the best mean validation metric, among the "
                  "settings whose every seed finished; each setting's mean validation metric "
                  "(percent):", *choices]
    if notes:
        lines += ["", "Runs that did not finish (not in the means):", *notes]
    return "\n".join(lines) + "\n"
