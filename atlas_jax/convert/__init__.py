"""atlas_jax.convert"""
