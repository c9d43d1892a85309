"""atlas_jax.data"""
