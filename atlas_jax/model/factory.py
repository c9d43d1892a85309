"""Creating models: random init directly into a sharded layout, abstract (shape-only) models
for loading, and the parameter shardings that the logical axes imply."""
from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from atlas_jax.model.config import ModelConfig
from atlas_jax.model.transformer import CausalLM
from atlas_jax.sharding import named_sharding


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def state_shardings(state: nnx.State, mesh: Mesh) -> nnx.State:
    """The NamedSharding of every variable, from its ``logical_axes`` metadata."""
    def sharding_of(variable: nnx.Variable):
        axes = variable.get_metadata().get("logical_axes")
        if axes is None:
            raise ValueError(f"variable of shape {variable.shape} has no logical_axes metadata")
        return variable.replace(named_sharding(mesh, axes, variable.shape))
    return jax.tree.map(sharding_of, state, is_leaf=_is_variable)


def abstract_model(cfg: ModelConfig, mesh: Mesh | None = None) -> CausalLM:
    """A model whose parameters are ShapeDtypeStructs: no memory, no compute."""
    return nnx.eval_shape(lambda: CausalLM(cfg, rngs=nnx.Rngs(0), mesh=mesh))


def init_model(cfg: ModelConfig, seed: int = 0, mesh: Mesh | None = None) -> CausalLM:
    """Random init; with a mesh, each parameter is created directly in its sharded layout."""
    if mesh is None:
        return CausalLM(cfg, rngs=nnx.Rngs(seed))
    graphdef, abstract_state = nnx.split(abstract_model(cfg, mesh))
    shardings = state_shardings(abstract_state, mesh)
    state = jax.jit(lambda: nnx.split(CausalLM(cfg, rngs=nnx.Rngs(seed), mesh=mesh))[1],
                    out_shardings=shardings)()
    return nnx.merge(graphdef, state)


def place_model(model: CausalLM, mesh: Mesh | None) -> CausalLM:
    """The same parameters laid out on ``mesh`` (None: left where they are, unconstrained)."""
    graphdef, state = nnx.split(model)
    if mesh is not None:
        state = jax.device_put(state, state_shardings(state, mesh))
    placed = nnx.merge(graphdef, state)
    placed.mesh = mesh
    return placed


def model_from_arrays(cfg: ModelConfig, load: Callable[[tuple, tuple[int, ...], np.dtype], np.ndarray],
                      mesh: Mesh | None = None) -> CausalLM:
    """Build a model whose parameter at ``path`` is ``load(path, shape, dtype)`` (a host array).

    With a mesh, each device only receives its own slice (``make_array_from_callback``), so a
    multi-host job never materialises a full copy of every tensor on every device.
    """
    graphdef, abstract_state = nnx.split(abstract_model(cfg, mesh))
    flat = nnx.to_flat_state(abstract_state)
    loaded = []
    for path, variable in flat:
        shape, dtype = tuple(variable.shape), np.dtype(variable.dtype)
        host = load(path, shape, dtype)
        if tuple(host.shape) != shape:
            raise ValueError(f"parameter {'.'.join(map(str, path))}: loaded shape {tuple(host.shape)}, "
                             f"the config implies {shape}")
        host = np.asarray(host, dtype=dtype)
        if mesh is None:
            value = jax.device_put(host)
        else:
            sharding = named_sharding(mesh, variable.get_metadata()["logical_axes"], shape)
            value = jax.make_array_from_callback(shape, sharding, lambda index, a=host: a[index])
        loaded.append((path, variable.replace(value)))
    return nnx.merge(graphdef, nnx.from_flat_state(loaded))
