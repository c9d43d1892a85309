"""atlas_jax.train"""
