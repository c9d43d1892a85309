"""Parameter names and layouts: atlas-jax state paths <-> Hugging Face tensor names.

Our module tree mirrors transformers' (``layers/self_attn/q_proj/kernel`` is
``model.layers.{i}.self_attn.q_proj.weight``), with three layout differences:
  * layer parameters are stacked on a leading axis instead of one tensor per layer;
  * projection kernels are [in..., out...] (x · W) where torch Linear weights are [out, in];
  * attention projections keep heads as their own axis: q_proj [E, H, D], o_proj [H, D, E].
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from atlas_jax.model.config import ModelConfig

Path = tuple[str, ...]
# tensors some checkpoints carry that hold no learned weights
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


def _kernel_in_dims(module: str) -> int:
    return 2 if module == "o_proj" else 1


def hf_name(path: Path, layer: int | None = None) -> str:
    """HF tensor name of a parameter path (``layer`` selects one slice of the stack)."""
    if path == ("embed_tokens",):
        return "model.embed_tokens.weight"
    if path == ("lm_head",):
        return "lm_head.weight"
    if path == ("norm", "scale"):
        return "model.norm.weight"
    if path[0] == "layers" and path[-1] in ("kernel", "bias", "scale"):
        leaf = "bias" if path[-1] == "bias" else "weight"
        return f"model.layers.{layer}.{'.'.join(path[1:-1])}.{leaf}"
    raise KeyError(f"no Hugging Face name for parameter {'/'.join(path)}")


def to_ours(path: Path, hf_array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Convert one HF tensor to our layout for a parameter of (unstacked) ``shape``."""
    if path[-1] == "kernel" or path == ("lm_head",):
        in_dims = _kernel_in_dims(path[-2]) if path[-1] == "kernel" else 1
        in_flat = int(np.prod(shape[:in_dims]))
        out_flat = int(np.prod(shape[in_dims:]))
        if hf_array.shape != (out_flat, in_flat):
            raise ValueError(f"shape {tuple(hf_array.shape)} does not match the config, which implies "
                             f"{(out_flat, in_flat)}")
        return np.asarray(hf_array).T.reshape(shape)
    if int(np.prod(hf_array.shape)) != int(np.prod(shape)) or hf_array.ndim > len(shape):
        raise ValueError(f"shape {tuple(hf_array.shape)} does not match the config, which implies {shape}")
    return np.asarray(hf_array).reshape(shape)


def to_hf(path: Path, array: np.ndarray) -> np.ndarray:
    """Convert one (unstacked) parameter to the HF tensor layout."""
    if path[-1] == "kernel" or path == ("lm_head",):
        in_dims = _kernel_in_dims(path[-2]) if path[-1] == "kernel" else 1
        in_flat = int(np.prod(array.shape[:in_dims]))
        return np.ascontiguousarray(array.reshape(in_flat, -1).T)
    if path[-1] == "bias":
        return array.reshape(-1)
    return array


def load_param(path: Path, shape: tuple[int, ...], get, cfg: ModelConfig) -> np.ndarray:
    """Our parameter at ``path`` from HF tensors (``get(name) -> array``), stacking layers."""
    if path[0] != "layers":
        return _convert(path, hf_name(path), get, shape)
    per_layer = shape[1:]
    stacked = np.empty(shape, dtype=np.float32)
    for i in range(cfg.num_layers):
        stacked[i] = _convert(path, hf_name(path, i), get, per_layer)
    return stacked


def _convert(path: Path, name: str, get, shape) -> np.ndarray:
    array = get(name)
    try:
        return to_ours(path, array, shape)
    except ValueError as e:
        raise ValueError(f"tensor {name!r}: {e}") from None


def hf_tensors(flat_params: list[tuple[Path, np.ndarray]], cfg: ModelConfig) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, array) for every parameter, unstacking layers, in transformers' order."""
    by_path = dict(flat_params)
    for path in _ordered(by_path):
        array = by_path[path]
        if path[0] == "layers":
            for i in range(cfg.num_layers):
                yield hf_name(path, i), to_hf(path, np.asarray(array[i]))
        else:
            yield hf_name(path), to_hf(path, np.asarray(array))


def expected_hf_names(paths: list[Path], cfg: ModelConfig) -> set[str]:
    names = set()
    for path in paths:
        if path[0] == "layers":
            names.update(hf_name(path, i) for i in range(cfg.num_layers))
        else:
            names.add(hf_name(path))
    return names


def unexpected_hf_names(available: list[str], paths: list[Path], cfg: ModelConfig) -> list[str]:
    """HF tensors that no parameter would read (a tied model may still carry lm_head.weight)."""
    expected = expected_hf_names(paths, cfg)
    if cfg.tie_word_embeddings:
        expected.add("lm_head.weight")
    return sorted(n for n in available if n not in expected and not n.endswith(IGNORED_SUFFIXES))


def _ordered(by_path: dict) -> list[Path]:
    head = [p for p in by_path if p == ("embed_tokens",)]
    layers = sorted(p for p in by_path if p[0] == "layers")
    tail = sorted(p for p in by_path if p[0] != "layers" and p != ("embed_tokens",))
    return head + layers + tail
