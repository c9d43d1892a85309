"""atlas_jax.envs"""
