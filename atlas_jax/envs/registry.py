"""Environment names -> classes, experts and per-environment defaults.

Imports are lazy: SciWorld starts a JVM and TextWorldExpress loads a jar, so a user of one
environment never pays for the others.
"""
from __future__ import annotations

import importlib

from atlas_jax.envs.base import TextEnv

# name -> (env class, expert class) as "module:attribute"
ENVS: dict[str, tuple[str, str]] = {
    "babyai": ("atlas_jax.envs.babyai:BabyAIEnv", "atlas_jax.envs.babyai_expert:BabyAIExpert"),
    "textcraft": ("atlas_jax.envs.textcraft:TextCraftEnv", "atlas_jax.envs.textcraft_expert:TextCraftExpert"),
    "sciworld": ("atlas_jax.envs.sciworld:SciWorldEnv", "atlas_jax.envs.sciworld_expert:SciWorldExpert"),
    "textworldexpress": ("atlas_jax.envs.twx:TextWorldExpressEnv", "atlas_jax.envs.twx:TextWorldExpressExpert"),
}


def _load(path: str):
    module, attribute = path.split(":")
    return getattr(importlib.import_module(module), attribute)


def _check(name: str) -> None:
    if name not in ENVS:
        raise ValueError(f"unknown environment {name!r}; expected one of {sorted(ENVS)}")


def env_class(name: str) -> type[TextEnv]:
    """The environment's class (its class attributes, e.g. ``score_scale``, without starting it)."""
    _check(name)
    return _load(ENVS[name][0])


def make_env(name: str, **options) -> TextEnv:
    """A fresh environment: ``make_env("babyai", max_steps=20)``."""
    _check(name)
    return _load(ENVS[name][0])(**options)


def make_expert(name: str, env: TextEnv, **options):
    """The expert policy for the episode ``env`` was just reset to (``act(observation) -> response``)."""
    _check(name)
    return _load(ENVS[name][1])(env, **options)
