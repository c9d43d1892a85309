"""A run directory remembers what it is: `atlas-jax train` into an output_dir that already holds a
checkpoint resumes it only when the new config describes the same run.

The first run writes ``config.json`` (the resolved config) and ``run_inputs.json`` (size and a hash
of each data file) beside ``checkpoints/`` (whose ``model_config.json`` holds the architecture). A
later run into the same output_dir compares, before it writes anything:

- every config key except the FREE_KEYS below (model, data and optimizer settings, seeds, ...);
- the contents of the data files whose path did not change (a mask regenerated in place);
- the model architecture against the checkpoint's ``model_config.json``.

``train.resume`` decides what a difference does: ``auto`` (default) refuses with one line naming
each differing key (old -> new); ``force`` resumes anyway and appends the change to
``resume_log.jsonl`` (for a deliberate change, e.g. a new learning rate; the checkpoint's optimizer
state and data position are kept); ``never`` refuses any output_dir that holds a checkpoint. An
architecture change is refused even with ``force``: the checkpoint cannot be restored into other
shapes. A checkpoint without ``config.json`` (deleted, or not written by atlas-jax train) cannot be
compared: ``auto`` refuses, ``force`` resumes. An output_dir with a config.json but no checkpoint
(a run stopped before its first save) holds nothing to resume: the run starts afresh and says so.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import sys
from typing import Any

from etils import epath

from atlas_jax.config_loader import flatten, to_dict
from atlas_jax.model import ModelConfig

CONFIG_FILE, INPUTS_FILE, RESUME_LOG = "config.json", "run_inputs.json", "resume_log.jsonl"

# Keys that may change when a run resumes (a key covers its sub-keys). Every other key is the run's
# identity. The reason is what makes each one safe to change between a save and a resume:
FREE_KEYS = {
    "output_dir": "where the run lives: a moved run directory is the same run",
    "train.steps": "the run's length: resuming with more steps trains longer (the schedule spans the new length)",
    "train.epochs": "the run's length, in epochs",
    "train.resume": "this policy itself",
    "train.log_every": "bookkeeping: how often metrics are logged",
    "train.save_every": "bookkeeping: how often checkpoints are saved",
    "train.keep_checkpoints": "bookkeeping: how many checkpoints are kept",
    "train.async_checkpointing": "bookkeeping: how checkpoints are written",
    "train.progress_bar": "console output only",
    "train.loss_chunk_tokens": "memory layout of the same loss",
    "train.lm_head": "sparse and dense heads compute the same loss",
    "eval": "held-out measurement: never changes the trained weights",
    "mesh": "device layout: sharded and unsharded runs give the same numbers",
    "data.worker_count": "how many processes encode the same batches",
    "model.dtype": "compute precision (parameters stay float32): a CPU run resumed on an accelerator",
    "model.attention": "kernel choice for the same attention",
    "model.remat": "memory/compute trade-off for the same gradients",
    "model.scan_layers": "loop form of the same layers (checkpoints do not depend on it)",
}
# run-time fields of ModelConfig: everything else in model_config.json is the architecture
_RUNTIME_FIELDS = ("dtype", "param_dtype", "attention", "remat", "scan_layers")
_HASHED_BYTES = 64 << 20  # a data file's fingerprint: its size and the sha256 of its first 64 MiB


class RunDirError(ValueError):
    """The output_dir holds a run this config must not resume; nothing was written."""


def _is_free(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in FREE_KEYS)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(changes: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} ({_short(a)} -> {_short(b)})" for k, (a, b) in changes.items())


def checkpoint_steps(checkpoint_dir: epath.PathLike) -> list[int]:
    """The saved steps (Orbax step folders) under ``checkpoint_dir``, oldest first."""
    directory = epath.Path(checkpoint_dir)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir())


def _read_json(path: epath.Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path}: not valid JSON (line {e.lineno}: {e.msg}); move the file away or fix it") from None


def _plain(tree: Any) -> Any:
    return json.loads(json.dumps(tree))  # tuples -> lists, as stored


def data_inputs(cfg) -> dict[str, dict]:
    """Fingerprints of the data files, by config key: {"path", "size", "sha256_head"} (None for a
    folder or a missing file, which the data loader reports itself)."""
    files = {f"data.train_files[{i}]": f for i, f in enumerate(cfg.data.train_files)}
    if cfg.data.mask_file is not None:
        files["data.mask_file"] = cfg.data.mask_file
    out = {}
    for key, name in files.items():
        path = epath.Path(name)
        entry = {"path": str(name), "size": None, "sha256_head": None}
        if path.is_file():
            digest = hashlib.sha256()
            with path.open("rb") as f:
                remaining = _HASHED_BYTES
                while remaining and (block := f.read(min(remaining, 1 << 20))):
                    digest.update(block)
                    remaining -= len(block)
            entry.update(size=path.stat().length, sha256_head=digest.hexdigest())
        out[key] = entry
    return out


def _content_changes(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """Data files at the same path whose contents differ (a renamed file shows as a key change)."""
    changes = {}
    for key, entry in new.items():
        before = old.get(key)
        if not before or before.get("path") != entry["path"] or entry["size"] is None or before.get("size") is None:
            continue
        if (before["size"], before["sha256_head"]) != (entry["size"], entry["sha256_head"]):
            changes[f"{key} content"] = (f"{before['size']} bytes sha256 {before['sha256_head'][:12]}",
                                         f"{entry['size']} bytes sha256 {entry['sha256_head'][:12]}")
    return changes


def model_config_of(cfg) -> ModelConfig:
    """The architecture the config asks for, read from config files only (no weights loaded)."""
    from atlas_jax.convert.checkpoint import is_checkpoint_dir, read_json, read_model_config

    if cfg.model.init_from is not None:
        source = cfg.model.init_from
        return read_model_config(source) if is_checkpoint_dir(source) else ModelConfig.from_hf_dir(source)
    path = epath.Path(cfg.model.config)
    if not path.is_file():
        raise FileNotFoundError(f"model.config: {path} does not exist")
    return ModelConfig.from_hf_dict(read_json(path), source=str(path))


def _architecture_changes(stored: epath.Path, cfg) -> dict[str, tuple[Any, Any]]:
    from atlas_jax.convert.checkpoint import MODEL_CONFIG_FILE

    path = stored / MODEL_CONFIG_FILE
    if not path.is_file():
        return {}
    old = _plain(dataclasses.asdict(ModelConfig.from_json(path.read_text(), source=str(path))))
    new = _plain(dataclasses.asdict(model_config_of(cfg)))
    return {k: (old[k], new[k]) for k in old if k not in _RUNTIME_FIELDS and old[k] != new[k]}


@dataclasses.dataclass
class RunDirState:
    steps: list[int]  # checkpoint steps found (empty: a fresh run)
    changes: dict[str, tuple[Any, Any]]  # every differing key, free or not
    forced: list[str]  # identity keys that train.resume=force let change
    inputs: dict[str, dict]  # data file fingerprints (run_inputs.json)


def check_run_dir(cfg) -> RunDirState:
    """Compare the config with the run already in ``cfg.output_dir``; raise RunDirError (before
    anything is written) when this config must not resume it."""
    out = epath.Path(cfg.output_dir)
    steps = checkpoint_steps(out / "checkpoints")
    mode = cfg.train.resume
    new = _plain(to_dict(cfg))
    config_path = out / CONFIG_FILE
    old = _read_json(config_path) if config_path.is_file() else None
    inputs = data_inputs(cfg)
    changes = {}
    if old is not None:
        a, b = flatten(old), flatten(new)
        # a key the stored config lacks came with a newer atlas-jax: it cannot have been set otherwise
        changes = {k: (a[k], b[k]) for k in sorted(set(a) & set(b)) if a[k] != b[k]}
        inputs_path = out / INPUTS_FILE
        if inputs_path.is_file():
            changes.update(_content_changes(_read_json(inputs_path), inputs))
    if not steps:
        return RunDirState([], changes, [], inputs)
    where = f"{out} holds a checkpoint (step {steps[-1]} in {out / 'checkpoints'})"
    if mode == "never":
        raise RunDirError(f"{where} and train.resume=never; nothing was written. Choose a new output_dir, "
                          "or set train.resume=auto to resume it")
    architecture = _architecture_changes(out / "checkpoints", cfg)
    if architecture:
        raise RunDirError(f"{where} of another model architecture: {_describe(architecture)}; nothing was written. "
                          "A checkpoint cannot resume into other shapes, even with train.resume=force: "
                          "choose a new output_dir")
    if old is None:
        if mode != "force":
            raise RunDirError(f"{where} but no {CONFIG_FILE}, so its settings cannot be compared with this config; "
                              "nothing was written. Add train.resume=force to resume it with this config, "
                              "or choose a new output_dir")
        return RunDirState(steps, {}, [f"{CONFIG_FILE} (missing)"], inputs)
    identity = {k: v for k, v in changes.items() if not _is_free(k.removesuffix(" content"))}
    if identity and mode != "force":
        raise RunDirError(f"{where} of a run with other settings: {_describe(identity)}; nothing was written. "
                          "Restore those values to resume it, choose a new output_dir, or add "
                          "train.resume=force to resume it with the new values")
    return RunDirState(steps, changes, list(identity), inputs)


def record_run_dir(cfg, state: RunDirState) -> None:
    """First process: write config.json and run_inputs.json (atomically) and, on a resume, a
    resume_log.jsonl line; say on stderr what changed."""
    from atlas_jax.outputs import atomic_write

    out = epath.Path(cfg.output_dir)
    if not state.steps and state.changes:
        print(f"note: {out} holds the config.json of a run that saved no checkpoint; starting afresh with "
              f"this config ({_describe(state.changes)})", file=sys.stderr)
    if state.steps and (state.changes or state.forced):
        free = {k: v for k, v in state.changes.items() if k not in state.forced}
        if state.forced:
            forced = {k: state.changes[k] for k in state.forced if k in state.changes}
            print(f"train.resume=force: resuming {out} from its checkpoint (step {state.steps[-1]}) despite "
                  f"{_describe(forced) or ', '.join(state.forced)}; recorded in {out / RESUME_LOG}", file=sys.stderr)
        if free:
            print(f"resuming {out} with changed keys that keep the run's identity: {_describe(free)}",
                  file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    if state.steps:
        entry = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "checkpoint_step": state.steps[-1], "resume": cfg.train.resume,
                 "changed": {k: list(v) for k, v in state.changes.items()}, "forced": state.forced}
        log = out / RESUME_LOG  # rewritten whole: GCS objects cannot be appended to
        earlier = log.read_text() if log.exists() else ""
        with atomic_write(log) as f:
            f.write(earlier + json.dumps(entry) + "\n")
    with atomic_write(out / CONFIG_FILE) as f:
        f.write(json.dumps(to_dict(cfg), indent=2) + "\n")
    with atomic_write(out / INPUTS_FILE) as f:
        f.write(json.dumps(state.inputs, indent=2) + "\n")


def prepare_run_dir(cfg, lead: bool) -> RunDirState:
    """Check ``cfg.output_dir`` against the run it holds (every process: all refuse alike), then
    record the run (first process only)."""
    state = check_run_dir(cfg)
    if lead:
        record_run_dir(cfg, state)
    return state
