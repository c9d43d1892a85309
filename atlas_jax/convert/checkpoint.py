"""atlas-jax model checkpoints, and loading a model from either a checkpoint or an HF directory.

A checkpoint directory (written by `atlas-jax import` and by training) holds::

    model_config.json     the ModelConfig (architecture + run-time options at save time)
    hf/                   config.json / generation_config.json of the HF source, if any
    tokenizer/            tokenizer files, if known
    <step>/params/        Orbax item "params": nnx.to_pure_dict of the nnx.Param state
    <step>/...            training adds its own items beside it (optimizer, data iterator)

Export and ``load_pretrained`` read the latest step's ``params`` item only, so an imported
checkpoint and a training checkpoint are read the same way.
"""
from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx
from jax.sharding import Mesh

from atlas_jax.paths import absolute, local_copy
from atlas_jax.convert import hf_params
from atlas_jax.convert.safetensors_io import SafetensorsReader
from atlas_jax.model import CausalLM, ModelConfig, abstract_model, model_from_arrays, state_shardings

MODEL_CONFIG_FILE = "model_config.json"
HF_META_DIR = "hf"
TOKENIZER_DIR = "tokenizer"
PARAMS_ITEM = "params"
HF_META_FILES = ("config.json", "generation_config.json")
# what `save_pretrained` of a tokenizer may write; copied verbatim on import/export
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json")


def is_checkpoint_dir(path: str | epath.Path) -> bool:
    return (epath.Path(path) / MODEL_CONFIG_FILE).is_file()


def is_hf_dir(path: str | epath.Path) -> bool:
    return (epath.Path(path) / "config.json").is_file()


def default_tokenizer_dir(model_dir: str | epath.Path) -> epath.Path:
    """The tokenizer that travels with MODEL: ``CKPT/tokenizer`` of an atlas-jax checkpoint, or
    the Hugging Face directory itself."""
    for candidate in (epath.Path(model_dir) / TOKENIZER_DIR, epath.Path(model_dir)):
        if (candidate / "tokenizer_config.json").is_file():
            return candidate
    raise FileNotFoundError(f"no tokenizer in {model_dir} (or its {TOKENIZER_DIR}/ folder); pass --tokenizer")


def read_model_config(ckpt_dir: str | epath.Path, **options: Any) -> ModelConfig:
    path = epath.Path(ckpt_dir) / MODEL_CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{ckpt_dir}: not an atlas-jax checkpoint (no {MODEL_CONFIG_FILE})")
    return ModelConfig.from_json(path.read_text(), source=str(path), **options)


def write_model_metadata(ckpt_dir: str | epath.Path, cfg: ModelConfig, hf_dir: str | epath.Path | None = None,
                         tokenizer_dir: str | epath.Path | None = None) -> None:
    """Config, HF source metadata and tokenizer beside the Orbax steps (first process only)."""
    if jax.process_index() != 0:
        return
    ckpt_dir = epath.Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    (ckpt_dir / MODEL_CONFIG_FILE).write_text(cfg.to_json() + "\n")
    if hf_dir is not None:
        copy_files(hf_dir, ckpt_dir / HF_META_DIR, HF_META_FILES)
    if tokenizer_dir is not None:
        copy_files(tokenizer_dir, ckpt_dir / TOKENIZER_DIR, TOKENIZER_FILES)


def copy_files(src: str | epath.Path, dst: str | epath.Path, names: tuple[str, ...]) -> list[str]:
    src, dst = epath.Path(src), epath.Path(dst)
    present = [n for n in names if (src / n).is_file()]
    if present:
        dst.mkdir(parents=True, exist_ok=True)
    for name in present:
        (src / name).copy(dst / name, overwrite=True)
    return present


def params_manager(ckpt_dir: str | epath.Path, **options: Any) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(absolute(ckpt_dir), options=ocp.CheckpointManagerOptions(**options))


def save_params(ckpt_dir: str | epath.Path, model: CausalLM, step: int = 0) -> None:
    """Save the model's parameters as step ``step`` (item ``params``)."""
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    with params_manager(ckpt_dir) as manager:
        manager.save(step, args=ocp.args.Composite(**{PARAMS_ITEM: ocp.args.StandardSave(params)}))
        manager.wait_until_finished()


def restore_model(ckpt_dir: str | epath.Path, step: int | None = None, mesh: Mesh | None = None,
                  **options: Any) -> CausalLM:
    """The model saved in an atlas-jax checkpoint; ``options`` override run-time config fields."""
    cfg = read_model_config(ckpt_dir, **options)
    with params_manager(ckpt_dir) as manager:
        steps = sorted(manager.all_steps(), reverse=True) if step is None else [step]
        if not steps:
            raise FileNotFoundError(f"{ckpt_dir}: checkpoint has {MODEL_CONFIG_FILE} but no saved step")
        graphdef, abstract = nnx.split(abstract_model(cfg, mesh))
        if mesh is None:
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            shardings = jax.tree.map(lambda v: v.replace(device), abstract,
                                     is_leaf=lambda x: isinstance(x, nnx.Variable))
        else:
            shardings = state_shardings(abstract, mesh)
        target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                              nnx.to_pure_dict(abstract), nnx.to_pure_dict(shardings))
        restored = _restore_newest_good(manager, steps, target, ckpt_dir)
    nnx.replace_by_pure_dict(abstract, restored)
    return nnx.merge(graphdef, abstract)


def _restore_newest_good(manager: ocp.CheckpointManager, steps: list[int], target: Any, ckpt_dir) -> Any:
    """The params of the first step in ``steps`` that restores; a damaged step (an interrupted
    copy, a deleted file) is reported and the next older one tried, so one bad save never
    makes the earlier good ones unreachable."""
    import sys

    failures = []
    for step in steps:
        try:
            restored = manager.restore(step, args=ocp.args.Composite(
                **{PARAMS_ITEM: ocp.args.StandardRestore(target)}))[PARAMS_ITEM]
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001  (Orbax/TensorStore raise many kinds)
            reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            failures.append(f"step {step}: {reason}")
            if len(steps) > 1:
                print(f"warning: {ckpt_dir}: step {step} cannot be restored ({reason}); trying an older step",
                      file=sys.stderr)
            continue
        if failures:
            print(f"warning: {ckpt_dir}: restored step {step} instead of the damaged newer step(s)", file=sys.stderr)
        return restored
    raise ValueError(f"{ckpt_dir}: no restorable checkpoint step ({'; '.join(failures)})")


def load_hf(hf_dir: str | epath.Path, mesh: Mesh | None = None, **options: Any) -> CausalLM:
    """A model from a Hugging Face directory (config.json + safetensors); no torch needed."""
    cfg = ModelConfig.from_hf_dir(hf_dir, **options)
    reader = SafetensorsReader(local_copy(hf_dir))  # memory-maps: a URL is downloaded first
    paths = [path for path, _ in nnx.to_flat_state(nnx.state(abstract_model(cfg), nnx.Param))]
    extra = hf_params.unexpected_hf_names(reader.names(), paths, cfg)
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise ValueError(f"{hf_dir}: safetensors hold tensors this {cfg.model_type} config does not use: {shown}")

    def load(path, shape, dtype) -> np.ndarray:
        return hf_params.load_param(path, shape, reader.get, cfg)

    return model_from_arrays(cfg, load, mesh)


def load_pretrained(path: str | epath.Path, mesh: Mesh | None = None, **options: Any) -> CausalLM:
    """MODEL arguments: an atlas-jax checkpoint directory or a Hugging Face model directory."""
    if is_checkpoint_dir(path):
        return restore_model(path, mesh=mesh, **options)
    if is_hf_dir(path):
        return load_hf(path, mesh=mesh, **options)
    if not epath.Path(path).exists():
        raise FileNotFoundError(f"{path}: no such model directory")
    raise FileNotFoundError(f"{path}: neither an atlas-jax checkpoint ({MODEL_CONFIG_FILE}) "
                            f"nor a Hugging Face model directory (config.json)")


def read_json(path: epath.Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
