"""Offline agent environments (AgentGym's text protocol), expert generators, episode records.

>>> env = make_env("textcraft")
>>> observation = env.reset(env.task_indices("eval", 1)[0])
>>> result = env.step("Thought:\\n...\\n\\nAction:\\nget 1 oak log")   # StepResult
>>> record = env.to_record()                                          # AgentTraj-L dict
"""
from atlas_jax.envs.base import StepResult, TextEnv, make_record, parse_action
from atlas_jax.envs.registry import ENVS, make_env, make_expert

__all__ = ["ENVS", "StepResult", "TextEnv", "make_env", "make_expert", "make_record", "parse_action"]
