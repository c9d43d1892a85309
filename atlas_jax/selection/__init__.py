"""atlas_jax.selection"""
