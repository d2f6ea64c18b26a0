"""The paper's baselines (Table 1) and ComiRec-SA, one module each, in the same framework as
SINE: the same item table, loss and full-ranking evaluation (see `sine_jax.models`)."""
