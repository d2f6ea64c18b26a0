"""Prototype quality of a trained SINE run: do its concept prototypes follow item categories
(the paper's Table 5 and Figure 3)? `launch/prototypes.py` writes the report.

From the best checkpoint: every real item is assigned to its nearest prototype by cosine, and

  * NMI (arithmetic) between that assignment and the items' categories (MovieLens: the first
    genre; items without a category left out and counted), with the chance level: the mean
    NMI of CHANCE_PERMUTATIONS random permutations of the assignment (same cluster sizes);
  * how many prototypes are some item's nearest;
  * prototype usage: how many distinct prototypes eq 2's top-K selects over the test users'
    histories, the perplexity of the selection counts (L when every prototype is chosen
    equally often, K when every user picks the same K) and the share of all selections that
    the K most chosen prototypes take (1.0 for a collapsed pool);
  * the mean entropy of P(k|t) (eq 3) and of e (eq 7) over those users (near 0: one-hot
    choices with vanishing gradients; log K: no choice at all);
  * the prototypes nearest to the most items, each with its nearest items by cosine (titles,
    else raw ids) and their categories.

Shapes: M items, L prototypes, K interests, D dim, U users, C concepts listed.
"""

import json
import os
import textwrap

import jax
import numpy as np

from sine_jax import evaluate, metrics, models, run_config, train
from sine_jax import workdir as workdir_lib
from sine_jax.data import pipeline
from sine_jax.errors import ConfigError, SineError, import_optional

CHANCE_PERMUTATIONS = 10


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest_prototypes(items: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """[M] int: for each item row of items [M, D], the prototype of prototypes [L, D] with the
    largest cosine (the lowest index on ties)."""
    return np.argmax(_unit_rows(items) @ _unit_rows(prototypes).T, axis=1)


def category_nmi(assign: np.ndarray, categories: np.ndarray, *,
                 permutations: int = CHANCE_PERMUTATIONS, seed: int = 0) -> dict:
    """NMI between assign [M] (cluster ids) and categories [M] (-1 = unknown, left out).

    Returns {"nmi", "chance_nmi" (mean over `permutations` random permutations of the
    assignment), "chance_nmi_std", "items_scored", "items_without_category", "categories" (how
    many distinct categories the scored items have: chance NMI grows with it)}.
    """
    normalized_mutual_info_score = import_optional(
        "sklearn.metrics", "analysis").normalized_mutual_info_score

    known = np.asarray(categories) >= 0
    truth, assign = np.asarray(categories)[known], np.asarray(assign)[known]
    rng = np.random.default_rng(seed)
    chance = [normalized_mutual_info_score(truth, rng.permutation(assign),
                                           average_method="arithmetic")
              for _ in range(permutations)]
    return {"nmi": float(normalized_mutual_info_score(truth, assign,
                                                      average_method="arithmetic")),
            "chance_nmi": float(np.mean(chance)), "chance_nmi_std": float(np.std(chance)),
            "items_scored": int(known.sum()), "items_without_category": int((~known).sum()),
            "categories": int(np.unique(truth).size)}


def selection_usage(prototype_ids: np.ndarray, num_prototypes: int) -> dict:
    """How the users' eq-2 selections prototype_ids [U, K] spread over a pool of L prototypes.

    Returns {"users", "selected" (distinct prototypes chosen by some user), "num_prototypes",
    "perplexity" (exp of the entropy of the selection shares), "top_k_share" (share of the
    U K selections taken by the K most chosen prototypes)}.
    """
    ids = np.asarray(prototype_ids)
    users, k = ids.shape
    counts = np.bincount(ids.ravel(), minlength=num_prototypes)
    shares = counts[counts > 0] / counts.sum()
    return {"users": int(users), "selected": int((counts > 0).sum()),
            "num_prototypes": int(num_prototypes),
            "perplexity": float(np.exp(-(shares * np.log(shares)).sum())),
            "top_k_share": float(np.sort(counts)[::-1][:k].sum() / counts.sum())}


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """[...]: the entropy (nats) of each distribution on the last axis of [..., K]."""
    p = np.asarray(probabilities, np.float64)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)


def encode_users(trained, max_seq_len: int, split: str = "test", batch_size: int = 512) -> dict:
    """What SINE makes of each user's `split` history (its last `max_seq_len` items):
    {"prototype_ids" [U, K] (eq 2), "assignment_entropy" (mean over real positions of the
    entropy of P(k|t), eq 3), "weight_entropy" (mean entropy of e, eq 7; None for SINE-label)},
    entropies in nats (log K at most)."""
    model = trained.model.merge(trained.params)

    @jax.jit
    def encode(history):
        out = model(history)
        return out.prototype_ids, out.assignment, out.interest_weights

    histories = pipeline.eval_arrays(trained.data, split, max_seq_len=max_seq_len)["history"]
    ids, assignment, weights = [], [], []
    for start in range(0, len(histories), batch_size):
        history = histories[start:start + batch_size]
        prototype_ids, p_kt, e = encode(history)
        ids.append(np.asarray(prototype_ids))
        assignment.append(entropy(p_kt)[history > 0])  # real positions only
        if e is not None:
            weights.append(entropy(e))
    return {"prototype_ids": np.concatenate(ids),
            "assignment_entropy": float(np.concatenate(assignment).mean()),
            "weight_entropy": float(np.concatenate(weights).mean()) if weights else None}


def concept_neighbours(items: np.ndarray, prototypes: np.ndarray, assign: np.ndarray,
                       num_concepts: int, neighbours: int) -> list[dict]:
    """The `num_concepts` prototypes nearest to the most items (assign [M] from
    `nearest_prototypes`; ties: lower index first), each with its `neighbours` nearest items
    of items [M, D] by cosine.

    Returns [{"prototype": l, "nearest_to": items whose nearest it is, "items": [{"item": id,
    "cosine": c}, ...]}]; item ids are 1-based (row i of `items` is item i + 1).
    """
    counts = np.bincount(assign, minlength=len(prototypes))
    chosen = np.argsort(-counts, kind="stable")[:num_concepts]
    cosines = _unit_rows(prototypes[chosen]) @ _unit_rows(items).T  # [C, M]
    concepts = []
    for row, prototype in zip(cosines, chosen):
        top = np.argsort(-row, kind="stable")[:neighbours]
        concepts.append({"prototype": int(prototype), "nearest_to": int(counts[prototype]),
                         "items": [{"item": int(i) + 1, "cosine": float(row[i])} for i in top]})
    return concepts


# ---------------------------------------------------------------------------------------------
# The run: config check, loading, labels, outputs.


def check_run_config(config, workdir: str) -> None:
    """ConfigError when CONFIG differs from the one RUN_DIR ran with (its config.json, else
    the config in its results.json), naming the --set overrides that fix it."""
    path = os.path.join(workdir, run_config.CONFIG_FILE)
    recorded = run_config.read_recorded(workdir)
    if recorded is None and os.path.isfile(path := os.path.join(workdir, "results.json")):
        with open(path) as f:
            recorded = json.load(f)["config"]
    if recorded is None:
        return
    fields = run_config.differing_fields(recorded, json.loads(config.to_json()))
    if fields:
        old = run_config.flatten(recorded)
        fixes = " ".join(f"--set={name}={old.get(name)}" for name in fields[:3])
        more = f" and {len(fields) - 3} more" if len(fields) > 3 else ""
        raise ConfigError(f"the config differs from {path} in {', '.join(fields[:3])}"
                          f"{more}: give the run's --set overrides, e.g. {fixes}")


def item_label(data, item: int) -> dict:
    """{"item", "name" (title, else "id RAW"), "category"} of remapped item id `item`."""
    title = data.item_titles[item] if data.item_titles is not None else ""
    category = int(data.item_categories[item])
    return {"item": item, "name": title or f"id {data.item_raw_ids[item]}",
            "category": data.category_names[category] if category >= 0 else "unknown"}


def concepts_markdown(report: dict) -> str:
    nmi, usage, entropy = report["nmi"], report["usage"], report["entropy"]
    lines = [f"# Concepts of {report['workdir']} (best step {report['best_step']})", "",
             (f"NMI between each item's nearest prototype (cosine) and its category: "
              f"{nmi['nmi']:.4f} (chance {nmi['chance_nmi']:.4f}, the mean of "
              f"{CHANCE_PERMUTATIONS} permutations of the assignment); {nmi['items_scored']} "
              f"items in {nmi['categories']} categories scored, "
              f"{nmi['items_without_category']} without a category; "
              f"{report['prototypes_used']} of {report['num_prototypes']} prototypes are some "
              "item's nearest."), "",
             (f"Prototype usage over {usage['users']} users' test histories (eq 2's top-"
              f"{report['num_interests']}): {usage['selected']} of {usage['num_prototypes']} "
              f"prototypes selected, perplexity {usage['perplexity']:.1f}, the "
              f"{report['num_interests']} most chosen take {100 * usage['top_k_share']:.1f}% of "
              "the selections."), "",
             (f"Mean entropy (nats; uniform = log K = {entropy['uniform']:.3f}) of P(k|t) "
              f"(eq 3) over real positions: {entropy['assignment']:.3f}; of e (eq 7): "
              + ("n/a" if entropy["interest_weights"] is None
                 else f"{entropy['interest_weights']:.3f}") + "."), ""]
    for concept in report["concepts"]:
        lines += [f"## Prototype {concept['prototype']} (nearest to {concept['nearest_to']} items)",
                  ""]
        lines += [f"{rank}. {item['name']} — {item['category']} (cos {item['cosine']:.3f})"
                  for rank, item in enumerate(concept["items"], 1)]
        lines.append("")
    return "\n".join(lines)


def plot_concepts(report: dict, path: str) -> None:
    """Writes PATH (PNG): one column per concept, listing its nearest items and categories."""
    import_optional("matplotlib", "analysis").use("Agg")
    from matplotlib import pyplot as plt

    concepts = report["concepts"]
    rows = max(len(c["items"]) for c in concepts)
    figure, axes = plt.subplots(1, len(concepts), squeeze=False,
                                figsize=(3.4 * len(concepts), 0.55 * rows + 1.2))
    for ax, concept in zip(axes[0], concepts):
        ax.axis("off")
        ax.set_title(f"prototype {concept['prototype']}\n(nearest to {concept['nearest_to']} "
                     "items)", fontsize=10)
        for rank, item in enumerate(concept["items"]):
            name = textwrap.shorten(item["name"], 34, placeholder="…")
            category = textwrap.shorten(item["category"], 34, placeholder="…")
            ax.text(0, 1 - rank / rows, f"{name}\n  {category}", va="top", fontsize=8,
                    transform=ax.transAxes)
    figure.suptitle(f"NMI {report['nmi']['nmi']:.3f} (chance {report['nmi']['chance_nmi']:.3f})",
                    fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def analyse(config, workdir: str, num_concepts: int, neighbours: int) -> dict:
    """The report of RUN_DIR's best checkpoint (what prototypes.json holds)."""
    name = config.model.name
    if name not in models.ENCODERS:
        raise SineError(f"model.name={name} has no prototypes (nothing is trained)")
    trained = train.restore_best(config, workdir)
    if "prototypes" not in trained.params:
        raise SineError(f"model.name={name} has no prototypes; give a SINE run")
    data = trained.data
    if data.item_categories is None or not (data.item_categories[1:] >= 0).any():
        raise SineError(f"{config.data.format} data {config.data.path or '(built in)'} has no "
                        "item categories to compare the prototypes with")
    m = data.num_items
    items = np.asarray(trained.params["item_embedding"][...])[1:m + 1]
    prototypes = np.asarray(trained.params["prototypes"][...])
    assign = nearest_prototypes(items, prototypes)
    concepts = concept_neighbours(items, prototypes, assign, num_concepts, neighbours)
    encoded = encode_users(trained, config.model.max_seq_len)
    for concept in concepts:
        concept["items"] = [{**item_label(data, item["item"]), "cosine": item["cosine"]}
                            for item in concept["items"]]
    return {"workdir": workdir, "model": name, "best_step": trained.best_step,
            "num_items": m, "num_prototypes": len(prototypes),
            "prototypes_used": len(np.unique(assign)),
            "num_interests": int(config.model.num_interests),
            "usage": selection_usage(encoded["prototype_ids"], len(prototypes)),
            "entropy": {"assignment": encoded["assignment_entropy"],
                        "interest_weights": encoded["weight_entropy"],
                        "uniform": float(np.log(config.model.num_interests))},
            "nmi": category_nmi(assign, data.item_categories[1:m + 1]),
            "concepts": concepts}


def validation_test_gap(config, workdir: str, rare_share: float = 0.25) -> dict:
    """Where RUN_DIR's drop from validation to test comes from (leave-one-out runs).

    The test input is the validation input plus the validation target, the most recent item,
    which the model has seen at that place in no training example of this user. The report,
    for the best checkpoint, in test metrics (`metrics.rank_metrics`):

      * "valid" and "test": the usual validation and test metrics;
      * "test_without_last": the test targets ranked from the validation input (the same
        targets and exclusions, the validation target left out of the history): when the
        drop closes here, the history's newest item is what costs it;
      * "test_rare_last" / "test_common_last": the test metrics of the users whose validation
        target is among the `rare_share` least trained items (by training count) / the rest,
        with "rare_count_at_most", the count that splits them.
    """
    if config.data.split != "leave_one_out":
        raise SineError("the validation-to-test gap is a leave-one-out measure")
    with workdir_lib.lock(workdir):
        run = train.build_trained_run(config, workdir)
        best_step, params = train.restore_best_params(run)
    ks = config.eval.ks

    def ranks(arrays):
        return evaluate.compute_ranks(
            run.eval_fn, params, arrays, batch_size=config.eval.batch_size, mesh=run.mesh
        )

    valid, test = run.valid_arrays, run.test_arrays
    test_ranks = ranks(test)
    counts = run.data.item_counts[valid["target"]]
    threshold = float(np.quantile(counts, rare_share))
    rare = counts <= threshold
    return {
        "workdir": workdir, "best_step": best_step,
        "valid": metrics.rank_metrics(ranks(valid), ks),
        "test": metrics.rank_metrics(test_ranks, ks),
        "test_without_last": metrics.rank_metrics(ranks({**test, "history": valid["history"]}), ks),
        "rare_count_at_most": threshold, "rare_users": int(rare.sum()),
        "test_rare_last": metrics.rank_metrics(test_ranks[rare], ks),
        "test_common_last": metrics.rank_metrics(test_ranks[~rare], ks),
    }
