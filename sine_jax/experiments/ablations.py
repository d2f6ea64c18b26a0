"""SINE's ambiguity switches one at a time against the paper preset, and the decision rule
a switch must pass to become a default (`launch/ablations.py` runs it).

Each variant is the run of the config and its overrides with the literal paper's model preset
(model.preset=paper) and one more override (VARIANTS): `paper` is the reference row;
`official` is the reference code's preset as a whole. The config's default preset is the
paper plus the switches that passed the rule (`sine_jax.sine_options.ADOPTED`):
`assignment-cosine` alone, then the cosine logit scale, 2 encoder blocks and dropout 0.2
together. The rule: at least +0.5 points of mean validation HR@10 over 3 paired
seeds, on both the ML-1M subset and ML-100K.
"""

import os
from collections.abc import Sequence

from sine_jax.experiments import sweep, tables

REFERENCE = "paper"
# Every variant but `official` starts from the literal paper (model.preset=paper, whatever the
# config's default preset is), so that the grid measures each switch against the equations as
# printed even after a switch has become the default.
PAPER = {"model.preset": "paper"}
# name -> (its overrides, what it changes); every model switch of sine_jax.sine_options.SWITCHES
# with each value other than the paper preset's, lambda = 0, and the official preset.
VARIANTS = {
    REFERENCE: (PAPER, "nothing: the literal paper"),
    "attention_hidden-512": ({**PAPER, "model.attention_hidden": "512"},
                             "eqs 1, 4, 6: attention MLP hidden width 512 instead of D"),
    "assignment-cosine": ({**PAPER, "model.assignment": "cosine"},
                          "eq 3: cos(X_t, C_k) / 0.07 instead of LN1(X_t W3) . LN2(C_k)"),
    "interest_attention-shared_gated": (
        {**PAPER, "model.interest_attention": "shared_gated"},
        "eq 4: one shared MLP, logits times P(k|t), instead of per-interest W_k1, W_k2"),
    "interest_layernorm-False": ({**PAPER, "model.interest_layernorm": "False"}, "eq 5: no LN3"),
    "aggregation_attention-own": ({**PAPER, "model.aggregation_attention": "own"},
                                  "eq 6: its own attention weights instead of eq 3's W3"),
    "aggregation_attention-own_plus_items": (
        {**PAPER, "model.aggregation_attention": "own_plus_items"},
        "eq 6: own weights, raw item embeddings added to Xhat"),
    "aggregation-dense_concat": ({**PAPER, "model.aggregation": "dense_concat"},
                                 "eqs 7-8: Dense(concat[mean phi, C_apt]), no tau"),
    "positional_in_concept_attention-True": (
        {**PAPER, "model.positional_in_concept_attention": "True"},
        "eqs 1, 6: positional embeddings added to the attention input"),
    "input_table-separate": ({**PAPER, "model.input_table": "separate"},
                             "beyond the paper: the history read from an input table of its own"),
    "logit_scale-cosine": ({**PAPER, "model.logit_scale": "cosine"},
                           "eqs 3, 7: LayerNorm products divided by D (the cosine) instead of "
                           "as printed (D x the cosine)"),
    "output_projection-True": ({**PAPER, "model.output_projection": "True"},
                               "beyond the paper: eq 8's user vector through a learned D x D "
                               "map"),
    "encoder_blocks-1": ({**PAPER, "model.encoder_blocks": "1"},
                         "beyond the paper: one causal self-attention block over the history"),
    "dropout-0.2": ({**PAPER, "model.dropout": "0.2"},
                    "beyond the paper: dropout 0.2 on the history's embeddings at training"),
    "cov_weight-0": ({**PAPER, "loss.cov_weight": "0.0"},
                     "eq 11: lambda = 0 (no covariance regulariser)"),
    "official": ({"model.preset": "official"},
                 "the reference code's preset: every switch above at its official value, "
                 "lambda = 0"),
}
DECISION_POINTS = 0.5  # the decision rule: mean validation HR@10 gain a new default must show
DECISION_METRIC = "HR@10"


def parse_variants(text: str | None) -> list[str]:
    """'official,paper' -> ['paper', 'official'] (VARIANTS' order); None -> all of them."""
    return list(VARIANTS) if text is None else sweep.parse_names(text, "--variants", VARIANTS)


def plan(config_spec: str, workdir: str, *, variants: str | None = None,
         seeds: str = "0,1,2", sets: Sequence[str] = ()) -> list[sweep.Job]:
    """One job per (variant, seed) in WORKDIR/VARIANT_seed-SEED, validated before anything
    runs (SweepError)."""
    variants = parse_variants(variants)
    seeds = sweep.parse_seeds(seeds)
    fixed = dict(sweep.parse_override(text, "--set") for text in sets)
    config = sweep.load_config(config_spec)
    changed = {field for name in variants for field in VARIANTS[name][0]}
    if sweep.SEED_FIELD in fixed:
        raise sweep.SweepError(f"--set={sweep.SEED_FIELD}=...: give the seeds with --seeds")
    clash = sorted(changed & set(fixed))
    if clash:
        raise sweep.SweepError(f"--set={clash[0]}=...: a variant changes {clash[0]}; drop the "
                               "--set or leave that variant out (--variants)")
    for field in [*fixed, *changed]:
        sweep.check_field(config, field)
    if "data.cache_dir" not in fixed and config.data.get("cache_dir") == "":
        fixed["data.cache_dir"] = os.path.join(workdir, "cache")
    jobs = []
    for name in variants:
        for seed in seeds:
            job_name = f"{name}_seed-{seed}"
            job_dir = os.path.join(workdir, job_name)
            overrides = {"variant": name, sweep.SEED_FIELD: seed}
            command = sweep.train_command(config_spec, job_dir,
                                          {**fixed, **VARIANTS[name][0], sweep.SEED_FIELD: seed})
            jobs.append(sweep.Job(name=job_name, workdir=job_dir, overrides=overrides,
                                  command=command))
    sweep.check_finished_jobs(jobs)
    return jobs


def _valid_by_seed(runs: list[dict], variant: str) -> dict[str, float]:
    """{seed: validation DECISION_METRIC} of the variant's finished runs."""
    return {run["overrides"][sweep.SEED_FIELD]: run["results"]["valid"][DECISION_METRIC]
            for run in runs if run["overrides"]["variant"] == variant and run["status"] == "done"
            and DECISION_METRIC in run["results"].get("valid", {})}


def aggregate(runs: list[dict]) -> list[dict]:
    """One row per variant (VARIANTS' order): {"variant", **tables.summarise(its runs),
    "valid_gain" (points of validation HR@10 over the reference, the mean over the seeds both
    finished: a paired difference; None without a common seed), "gain_seeds"}."""
    names = [name for name in VARIANTS if any(r["overrides"]["variant"] == name for r in runs)]
    reference = _valid_by_seed(runs, REFERENCE)
    rows = []
    for name in names:
        row = {"variant": name,
               **tables.summarise([r for r in runs if r["overrides"]["variant"] == name])}
        ours = _valid_by_seed(runs, name)
        common = sorted(set(ours) & set(reference), key=int)
        row["gain_seeds"] = [int(seed) for seed in common] if name != REFERENCE else []
        row["valid_gain"] = (100 * float(sum(ours[s] - reference[s] for s in common)) / len(common)
                             if common and name != REFERENCE else None)
        rows.append(row)
    return rows


DECISION_SEEDS = 3  # ... as the mean of this many seeds


def verdict(gain: float | None, seeds: int) -> str:
    """The decision rule on one dataset for a gain measured on `seeds` paired seeds."""
    if gain is None:
        return ""
    if gain < DECISION_POINTS:
        return "no"
    if seeds < DECISION_SEEDS:
        return f"not yet: {seeds} of {DECISION_SEEDS} seeds"
    return "passes here"


def markdown_table(rows: list[dict], ks: tuple[int, ...], metrics=("HR", "NDCG")) -> str:
    """The rows of `aggregate` as Markdown: test metrics (percent, mean ± std), validation
    HR@10, its gain over the paper preset and the decision rule's verdict on this data."""
    columns = [f"{name}@{k}" for k in ks for name in metrics]
    lines = ["| variant | " + " | ".join(columns) + f" | valid {DECISION_METRIC} | gain "
             f"(points, paired seeds) | +{DECISION_POINTS} rule | seeds | mean wall time |",
             "|---" * (len(columns) + 6) + "|"]
    notes = []
    for row in rows:
        if row["done"]:
            cells = [tables.format_cell(row["test"].get(c)) for c in columns]
            cells.append(tables.format_cell(row["valid"].get(DECISION_METRIC)))
        else:
            cells = [tables.status_cell(row)] * (len(columns) + 1)
        gain = row["valid_gain"]
        paired = f" ({len(row['gain_seeds'])})" if gain is not None else ""
        cells += ["" if gain is None else f"{gain:+.2f}{paired}",
                  verdict(gain, len(row["gain_seeds"])), f"{row['done']}/{len(row['seeds'])}",
                  tables.format_seconds(row["wall_seconds"])]
        lines.append(f"| {row['variant']} | " + " | ".join(cells) + " |")
        notes += tables.not_done_lines(row["variant"], row)
    lines += ["", "What each variant changes (one override on top of the paper preset):", ""]
    lines += [f"- `{row['variant']}`: {VARIANTS[row['variant']][1]}"
              + "".join(f"; `{f}={v}`" for f, v in VARIANTS[row["variant"]][0].items())
              for row in rows]
    if notes:
        lines += ["", "Runs that did not finish (not in the means):", *notes]
    return "\n".join(lines) + "\n"
