"""atlas_jax.model"""
