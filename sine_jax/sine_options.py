"""SINE's switches and presets: `SineOptions` (each deviation from the printed equations, one
field), the presets, and the resolution of a config's `model.*` fields into options.

Pure Python (no JAX): the config checks, the recorded configs of workdirs and the sweep
resolve a config without loading JAX. `sine_jax.models.sine` builds the model from the
resolved `SineOptions`.
"""

import dataclasses

from sine_jax.errors import ConfigError

_CHOICES = {
    "assignment": ("layernorm", "cosine"),
    "interest_attention": ("per_interest", "shared_gated"),
    "aggregation_attention": ("shared_w3", "own", "own_plus_items"),
    "aggregation": ("temperature", "dense_concat", "label_aware"),
    "input_table": ("shared", "separate"),
    "logit_scale": ("printed", "cosine"),
}
_BOOLS = ("interest_layernorm", "positional_in_concept_attention", "output_projection")


def check_dropout_rate(rate) -> float:
    """`rate` as a float if it is a number in [0, 1), else ConfigError naming model.dropout
    (every model's dropout field)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ConfigError(f"model.dropout={rate!r} must be a number in [0, 1)")
    return float(rate)


@dataclasses.dataclass(frozen=True)
class SineOptions:
    """Model switches (hashable: usable as a static jit argument). Defaults = "paper" (the
    equations as printed; the "default" preset changes some of them, see PRESETS).

    Attributes:
        attention_hidden: hidden size H of the eq 1 and eq 4 attention MLPs and of eq 6's
            own attention; 0 means D. Paper 0, official 512 (`hidden_size`). Eq 6 with
            "shared_w3" always uses W3 (H = D).
        assignment: eq 3. "layernorm": the literal LN1(X W3) . LN2(C^u_k); "cosine": the
            reference code's cos(X_t, C^u_k) / 0.07, no W3 and no LayerNorm.
        interest_attention: eq 4. "per_interest": the literal W_{k,1} [K, D, H], W_{k,2} [K, H];
            "shared_gated": the reference code's one MLP D -> H -> K whose logits are
            multiplied by P(k|t) before the masked softmax over t. As in the reference code,
            eq 5 then weighs X_t by P(t|k) alone (P(k|t) is already inside it).
        interest_layernorm: LN3 in eq 5 (the reference code has none).
        aggregation_attention: eq 6. "shared_w3": the literal attention with eq 3's W3 and a
            W4 [D]; "own": its own [D, H] and [H] weights; "own_plus_items": own weights and the
            raw item embeddings X added to Xhat (the reference code's `cpt_feat`). LN4 is
            applied in every mode (no switch removes it; the reference code has none).
        aggregation: eqs 7-8. "temperature": the literal softmax_k(C_apt . phi_k / tau);
            "dense_concat": the reference code's e = softmax_k(phi_k . Dense(concat[mean_k
            phi_k, C_apt])) without tau, v = sum_k e_k phi_k; "label_aware": SINE-label (set
            by model.name=sine_label): no eqs 6-8; training scores each example with the
            interest nearest its target (MIND's label-aware attention, p -> infinity) and
            inference retrieves with all K interests (K x N candidates merged by score).
        prototype_pool: "learned" (eq 2's C, L free prototypes) or "categories" (SINE-cate,
            set by model.name=sine_cate: C = the mean item embedding of each item category,
            L = the number of categories; no free prototypes, no L_c).
        positional_in_concept_attention: add the learned positional embeddings to the attention
            input of eq 1, and of eq 6 (the reference code adds them to both; values stay
            un-embedded). Eq 4 always adds them (paper and reference code).
        input_table: where the history's X_t come from. "shared" (paper and reference code):
            the rows of the item table that eq 9 scores, so v, a mixture of the history's
            rows, scores those very items highly; "separate": an input table of its own
            (`input_embedding` [R, D]); the item table then only scores. Beyond the paper
            (docs/results-4epochs.md: what ranking the history costs); dense item updates only.
        logit_scale: the products of LayerNorm'd vectors in eq 3 (assignment "layernorm")
            and eq 7 (aggregation "temperature"). "printed": as printed, about D times the
            cosine the paper describes, so that both softmaxes are one-hot from the first
            step; "cosine": divided by D, the cosine (the LayerNorm gains, learned, can still
            sharpen it).
        output_projection: beyond the paper: the user vector of eq 8 goes through a learned
            D x D map W_o (started at the identity), v' = v W_o, before it scores the items.
            Without it a score v . H_j is a mixture of the similarities X_t . H_j between
            the history's items and item j in one shared table, symmetric in the two items;
            W_o lets "j often follows t" differ from "t often follows j", as the transforms
            of GRU4Rec, Caser and SASRec do. Not with SINE-label (no v).
        encoder_blocks: beyond the paper: the history's X_t are first contextualised by this
            many causal self-attention blocks (SASRec's, one head, with positional embeddings
            of their own and a final LayerNorm), so that each X_t of eqs 1-6 carries what came
            before it; 0 (the paper) reads the item embeddings themselves.
        dropout: beyond the paper (which names none): the rate of dropout at training on the
            history's embeddings X and inside the encoder blocks (`model.dropout`).
        temperature: tau of eq 7 (`model.temperature`, 0.1).
    """

    attention_hidden: int = 0
    assignment: str = "layernorm"
    interest_attention: str = "per_interest"
    interest_layernorm: bool = True
    aggregation_attention: str = "shared_w3"
    aggregation: str = "temperature"
    positional_in_concept_attention: bool = False
    prototype_pool: str = "learned"
    input_table: str = "shared"
    logit_scale: str = "printed"
    output_projection: bool = False
    encoder_blocks: int = 0
    dropout: float = 0.0
    temperature: float = 0.1

    def __post_init__(self):
        for field in ("attention_hidden", "encoder_blocks"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"model.{field}={value!r} must be an integer >= 0")
        for field, allowed in _CHOICES.items():
            value = getattr(self, field)
            if value not in allowed:
                raise ConfigError(f"model.{field}={value!r} must be one of {allowed}")
        for field in _BOOLS:
            value = getattr(self, field)
            if not isinstance(value, bool):
                raise ConfigError(f"model.{field}={value!r} must be True or False")
        if self.prototype_pool not in ("learned", "categories"):
            raise ConfigError(f"prototype_pool={self.prototype_pool!r}: learned | categories")
        check_dropout_rate(self.dropout)
        tau = self.temperature
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0:
            raise ConfigError(f"model.temperature={tau!r} must be a number > 0")
        if self.output_projection and self.aggregation == "label_aware":
            raise ConfigError("model.output_projection=True projects eq 8's user vector, "
                              "which SINE-label does not have")


# The deviations from the printed equations that passed the decision rule, with the paired
# gain in mean validation HR@10 over 3 seeds. The cosine assignment passed alone
# (docs/results-4epochs.md, "Each ambiguity switch"); the other three passed together, as one
# change against the preset that had the cosine assignment only (docs/results.md, "The
# interests").
ADOPTED = {
    "assignment": "cosine",  # +0.80 points on the ML-1M subset, +1.20 on ML-100K
    # the next three, one change: +0.74 on ML-100K, over +3 on the ML-1M subset
    "logit_scale": "cosine",
    "encoder_blocks": 2,
    "dropout": 0.2,
}
PRESETS = {
    "default": SineOptions(**ADOPTED),
    "paper": SineOptions(),
    "official": SineOptions(
        attention_hidden=512,
        assignment="cosine",
        interest_attention="shared_gated",
        interest_layernorm=False,
        aggregation_attention="own_plus_items",
        aggregation="dense_concat",
        positional_in_concept_attention=True,
    ),
}
SWITCHES = ("attention_hidden", *_CHOICES, *_BOOLS, "encoder_blocks", "dropout")
# What the presets meant for a switch that a run's config.json left unset (None = the
# preset's value): every switch in the runs recorded before the runs recorded them resolved,
# and `dropout` in those recorded before it became a switch. The default preset then had the
# cosine assignment only (printed logit scale, no encoder blocks, no dropout).
RECORDED_BEFORE_RESOLVING = {**PRESETS, "default": SineOptions(assignment="cosine")}
# The ablations of the paper's Table 6, as `model.name`s: the options each one fixes.
VARIANTS = {
    "sine_cate": {"prototype_pool": "categories"},
    "sine_label": {"aggregation": "label_aware"},
}


def resolve_switches(model_config, presets: dict[str, SineOptions] = PRESETS) -> SineOptions:
    """The options of `model_config.preset` with every non-None switch field overriding it.

    Args:
        model_config: `config.model` (ConfigDict or dict) with `preset`, `temperature` and the
            switch fields of `SineOptions` (None or absent = take the preset's value).
        presets: what each preset name means (PRESETS; RECORDED_BEFORE_RESOLVING for a
            config.json written before runs recorded their switches resolved).

    Returns:
        The resolved SineOptions.

    Raises:
        ConfigError: unknown preset or an invalid switch value.
    """
    preset = model_config.get("preset", "default")
    if preset not in presets:
        raise ConfigError(f"model.preset={preset!r} must be one of {tuple(presets)}")
    overrides = {f: model_config.get(f) for f in SWITCHES if model_config.get(f) is not None}
    temperature = model_config.get("temperature")
    if temperature is not None:
        overrides["temperature"] = temperature
    name = model_config.get("name", "sine")
    for field, value in VARIANTS.get(name, {}).items():
        if overrides.get(field, value) != value:
            raise ConfigError(
                f"model.name={name!r} sets model.{field}={value!r}; drop "
                f"model.{field}={overrides[field]!r}"
            )
        overrides[field] = value
    return dataclasses.replace(presets[preset], **overrides)


def resolved_switches(
    model_config, presets: dict[str, SineOptions] = PRESETS
) -> dict[str, int | str | bool]:
    """{field: value} of every SWITCHES field as `resolve_switches` resolves it: what a run
    records, so that the model it trained stays known when a preset changes meaning."""
    options = resolve_switches(model_config, presets)
    return {field: getattr(options, field) for field in SWITCHES}


# The model names that build SINE: itself and the ablations of its Table 6 (VARIANTS).
SINE_NAMES = ("sine", *VARIANTS)
