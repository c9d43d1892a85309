"""Export a model to a Hugging Face directory: sharded safetensors + index, config.json,
generation_config.json and tokenizer files, loadable by ``transformers`` as is."""
from __future__ import annotations

import json

import jax
import ml_dtypes
import numpy as np
from etils.epath import Path
from flax import nnx

from atlas_jax.convert import hf_params
from atlas_jax.convert.atomic_dir import atomic_dir, check_not_input
from atlas_jax.convert.checkpoint import (HF_META_DIR, TOKENIZER_DIR, TOKENIZER_FILES, copy_files, read_json,
                                          restore_model)
from atlas_jax.convert.safetensors_io import write_sharded
from atlas_jax.model import CausalLM

EXPORT_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16),
                 "float16": np.dtype(np.float16)}


def hf_config_for(model: CausalLM, source_dir: Path | None) -> dict:
    """The source's config.json when it describes this architecture, else one built from the config."""
    generated = model.cfg.to_hf_dict()
    source = source_dir / "config.json" if source_dir is not None else None
    if source is not None and source.is_file():
        original = read_json(source)
        if original.get("model_type") == model.cfg.model_type:
            return original
    return generated


def generation_config_for(model: CausalLM, source_dir: Path | None) -> dict:
    source = source_dir / "generation_config.json" if source_dir is not None else None
    if source is not None and source.is_file():
        return read_json(source)
    cfg = model.cfg
    return {k: v for k, v in {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
                              "pad_token_id": cfg.pad_token_id}.items() if v is not None}


def export_model(model: CausalLM, out_dir: str | Path, *, tokenizer_dir: str | Path | None = None,
                 source_dir: str | Path | None = None, dtype: str | None = None,
                 max_shard_bytes: int = 5 * 2**30, overwrite: bool = False,
                 inputs: tuple = ()) -> Path:
    """Write ``model`` to ``out_dir`` in Hugging Face format.

    ``source_dir``: where the original config.json / generation_config.json live (kept verbatim
    so exporting an imported model reproduces it); ``dtype``: tensor dtype, default the source's
    ``torch_dtype`` / ``dtype`` or float32.
    """
    source_dir = Path(source_dir) if source_dir is not None else None
    config = hf_config_for(model, source_dir)
    dtype = dtype or config.get("dtype") or config.get("torch_dtype") or "float32"
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"export dtype {dtype!r} is not supported (choose {', '.join(EXPORT_DTYPES)})")
    np_dtype = EXPORT_DTYPES[dtype]
    config["torch_dtype"] = dtype  # the source's value would misstate the tensors written
    if "dtype" in config:  # transformers >= 4.56 writes and reads this name
        config["dtype"] = dtype
    flat = [(path, variable) for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param))]
    tensors = ((name, array.astype(np_dtype))
               for name, array in hf_params.hf_tensors(
                   [(path, _host(variable[...])) for path, variable in flat], model.cfg))
    with atomic_dir(out_dir, overwrite=overwrite, inputs=(tokenizer_dir, source_dir, *inputs)) as temp:
        write_sharded(temp, tensors, max_shard_bytes=max_shard_bytes)
        (temp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (temp / "generation_config.json").write_text(
            json.dumps(generation_config_for(model, source_dir), indent=2) + "\n")
        if tokenizer_dir is not None:
            if not copy_files(tokenizer_dir, temp, TOKENIZER_FILES):
                raise FileNotFoundError(f"{tokenizer_dir}: no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...)")
    return Path(out_dir)


def export_checkpoint(ckpt_dir: str | Path, out_dir: str | Path, *, tokenizer_dir: str | Path | None = None,
                      step: int | None = None, **kwargs) -> Path:
    """Export the latest (or given) step of an atlas-jax checkpoint; the tokenizer defaults to
    the one stored in the checkpoint."""
    ckpt_dir = Path(ckpt_dir)
    check_not_input(out_dir, [ckpt_dir, tokenizer_dir])  # before the (slow) restore
    model = restore_model(ckpt_dir, step=step, dtype="float32")
    if tokenizer_dir is None and (ckpt_dir / TOKENIZER_DIR).is_dir():
        tokenizer_dir = ckpt_dir / TOKENIZER_DIR
    return export_model(model, out_dir, tokenizer_dir=tokenizer_dir, source_dir=ckpt_dir / HF_META_DIR,
                        inputs=(ckpt_dir,), **kwargs)


def _host(array: jax.Array) -> np.ndarray:
    # multi-host: a parameter sharded across processes must be gathered before writing
    if isinstance(array, jax.Array) and not array.is_fully_addressable:
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(array, tiled=True))
    return np.asarray(jax.device_get(array))
