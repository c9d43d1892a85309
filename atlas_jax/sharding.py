"""Device mesh and the one table that maps logical axis names to mesh axes.

Every parameter carries a ``logical_axes`` tuple in its metadata and every activation is
constrained with ``shard(x, axes)``; ``RULES`` below is the only place that decides which
mesh axis a logical axis lands on. Mesh axes: ``data`` (pure data parallel), ``fsdp``
(data parallel with sharded parameters and optimizer state), ``tensor`` (Megatron-style
head / MLP / vocab parallelism).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Iterator, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis (str), tuple of mesh axes, or None (replicated).
RULES: dict[str, str | tuple[str, ...] | None] = {
    # parameters
    "layers": None,
    "vocab": "tensor",
    "embed": "fsdp",
    "q_heads": "tensor",
    "kv_heads": "tensor",
    "head_dim": None,
    "mlp": "tensor",
    "norm": None,
    # activations
    "act_batch": ("data", "fsdp"),
    "act_seq": None,
    "act_cache_seq": None,  # KV-cache slots (decoding)
    "act_embed": None,
    "act_heads": "tensor",
    "act_kv_heads": "tensor",
    "act_head_dim": None,
    "act_mlp": "tensor",
    "act_vocab": "tensor",
}


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh shape; one axis may be -1 to take all remaining devices. ``num_devices`` limits the
    mesh to the first N devices (-1: all), e.g. to compare a run with a smaller one."""

    data: int = 1
    fsdp: int = -1
    tensor: int = 1
    num_devices: int = -1

    @classmethod
    def parse(cls, text: str) -> "MeshConfig":
        """``"DATA,FSDP,TENSOR"`` as given on command lines, e.g. ``"1,-1,1"``."""
        try:
            data, fsdp, tensor = (int(x) for x in text.split(","))
        except ValueError:
            raise ValueError(f"mesh {text!r}: expected three comma-separated integers DATA,FSDP,TENSOR "
                             f"(one may be -1)") from None
        return cls(data=data, fsdp=fsdp, tensor=tensor)

    def shape(self, num_devices: int) -> tuple[int, int, int]:
        sizes = {name: getattr(self, name) for name in MESH_AXES}
        for name, size in sizes.items():
            if size == 0 or size < -1:
                raise ValueError(f"mesh.{name}={size}: each mesh axis is a positive size or -1")
        fill = [name for name, size in sizes.items() if size == -1]
        if len(fill) > 1:
            raise ValueError(f"mesh: only one axis may be -1, got {', '.join('mesh.' + n for n in fill)}")
        fixed = math.prod(size for size in sizes.values() if size != -1)
        if fill:
            if num_devices % fixed:
                raise ValueError(
                    f"mesh.{fill[0]}=-1 cannot fill {num_devices} devices: the other axes multiply to {fixed}")
            sizes[fill[0]] = num_devices // fixed
        elif fixed != num_devices:
            raise ValueError(
                f"mesh data={sizes['data']} x fsdp={sizes['fsdp']} x tensor={sizes['tensor']} = {fixed} "
                f"devices, but {num_devices} are available")
        return tuple(sizes[name] for name in MESH_AXES)


def build_mesh(config: MeshConfig = MeshConfig(), devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    if config.num_devices != -1:
        if not 1 <= config.num_devices <= len(devices):
            raise ValueError(f"mesh.num_devices={config.num_devices}: {len(devices)} devices are available")
        devices = devices[:config.num_devices]
    shape = config.shape(len(devices))
    try:  # topology-aware placement on TPU/GPU; CPU falls back to a plain reshape
        from jax.experimental import mesh_utils
        grid = mesh_utils.create_device_mesh(shape, devices=devices)
    except Exception:  # noqa: BLE001 - any failure here only loses placement quality
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES)


def logical_to_spec(axes: Sequence[str | None], shape: Sequence[int] | None = None,
                    mesh: Mesh | None = None) -> PartitionSpec:
    """PartitionSpec for logical ``axes``. With ``shape`` and ``mesh``, a dimension that the
    mesh axes do not divide is replicated instead (tiny test models, odd head counts), and a
    mesh axis is never used twice."""
    used: set[str] = set()
    spec = []
    for dim, name in enumerate(axes):
        if name is not None and name not in RULES:
            raise KeyError(f"logical axis {name!r} has no entry in atlas_jax.sharding.RULES")
        target = RULES.get(name) if name is not None else None
        mesh_axes = (target,) if isinstance(target, str) else tuple(target or ())
        mesh_axes = tuple(a for a in mesh_axes if a not in used)
        if mesh is not None:
            mesh_axes = tuple(a for a in mesh_axes if mesh.shape[a] > 1)
            if shape is not None and shape[dim] % math.prod(mesh.shape[a] for a in mesh_axes):
                mesh_axes = ()
        used.update(mesh_axes)
        spec.append(None if not mesh_axes else mesh_axes[0] if len(mesh_axes) == 1 else mesh_axes)
    return PartitionSpec(*spec)


def named_sharding(mesh: Mesh, axes: Sequence[str | None], shape: Sequence[int] | None = None) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(axes, shape, mesh))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a [batch, seq, ...] input array: batch over data x fsdp."""
    return NamedSharding(mesh, logical_to_spec(("act_batch",) + (None,) * (ndim - 1)))


# --- activation constraints -------------------------------------------------------------
_ACTIVE: list[Mesh] = []


@contextlib.contextmanager
def use_mesh(mesh: Mesh | None) -> Iterator[Mesh | None]:
    """Activate ``mesh`` for ``shard`` while tracing; ``None`` leaves activations unconstrained."""
    _ACTIVE.append(mesh)
    try:
        yield mesh
    finally:
        _ACTIVE.pop()


def active_mesh() -> Mesh | None:
    return _ACTIVE[-1] if _ACTIVE else None


def shard(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """Constrain activation ``x`` to the logical ``axes``; a no-op when no mesh is active."""
    mesh = active_mesh()
    if mesh is None or mesh.size == 1:
        return x
    if len(axes) != x.ndim:
        raise ValueError(f"shard: {len(axes)} logical axes {tuple(axes)} for an array of shape {x.shape}")
    return jax.lax.with_sharding_constraint(x, named_sharding(mesh, axes, x.shape))
