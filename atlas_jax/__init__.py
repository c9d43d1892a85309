"""atlas-jax: ATLaS critical-step agent tuning in JAX."""
__version__ = "0.1.0"
