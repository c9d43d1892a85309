"""`atlas-jax ablate`: the paper's ablation table (rows all / atlas / random / noncritical / perplexity)."""
