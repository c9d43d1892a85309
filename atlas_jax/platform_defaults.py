"""Defaults that depend on the platform the run is on (one place, used by every command).

Compute dtype: bfloat16 on accelerators (GPU/TPU: native, half the memory traffic), float32 on
CPU, where XLA's CPU backend has no batched bfloat16 dot (``DotThunk::Execute: BF16 x BF16 = F32``
in batched decode) and emulates the rest slowly, and where bfloat16 scoring loses ~3 digits of
NLL for nothing.
"""
from __future__ import annotations


def default_compute_dtype(backend: str | None = None) -> str:
    """``"float32"`` on CPU, ``"bfloat16"`` on GPU/TPU (``backend`` defaults to JAX's)."""
    if backend is None:
        import jax

        backend = jax.default_backend()
    return "float32" if backend == "cpu" else "bfloat16"


def resolve_dtype(requested: str | None, backend: str | None = None) -> tuple[str, str]:
    """(dtype, how it was chosen) for a command's ``--dtype`` (None: the platform default)."""
    if requested:
        return requested, "--dtype"
    if backend is None:
        import jax

        backend = jax.default_backend()
    return default_compute_dtype(backend), f"platform default on {backend}"
