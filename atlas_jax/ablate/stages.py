"""The pipeline's stages as the ablation calls them: in this process, through the functions behind
`atlas-jax experts / score / select / eval` (each command's own parser and ``run``, so the
ablation follows exactly what the commands do) and `atlas-jax train`'s library function.

Every artefact is written atomically (a temporary name, then a rename), so a file that exists is
complete and a killed ablation can reuse it.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import shutil
import tempfile
import time
from typing import Sequence

from atlas_jax.ablate.config import AblationConfig, EvalEnv, EvalSection, Stage
from atlas_jax import paths
from atlas_jax.outputs import atomic_write


class StageError(RuntimeError):
    """A stage ended without its result (a command's non-zero exit, a preempted training)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # a bad argument list is a ValueError here, not an exit
        raise ValueError(f"{self.prog}: {message}")


def command_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    from atlas_jax.cli import COMMANDS

    module = importlib.import_module(COMMANDS[name][0])
    parser = _Parser(prog=f"atlas-jax {name}")
    module.add_arguments(parser)
    return parser, module


def command_accepts(name: str, flag: str) -> bool:
    parser, _ = command_parser(name)
    return flag in parser._option_string_actions


def run_command(name: str, argv: Sequence[str]) -> None:
    parser, module = command_parser(name)
    argv = [str(a) for a in argv]
    print(f"ablate: atlas-jax {name} {' '.join(argv)}", flush=True)
    code = int(module.run(parser.parse_args(argv)) or 0)
    if code:
        raise StageError(f"atlas-jax {name} exited with status {code} (its output is above); rerun to resume")


def write_json(path: str, value) -> None:
    with atomic_write(path) as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def read_json(path: str):
    return json.loads(paths.Path(path).read_text(encoding="utf-8"))


def produce(path: str, make) -> str:
    """``make(tmp_path)`` unless ``path`` exists; then rename tmp -> path (atomic). A URL has no
    atomic rename: made in a local folder, uploaded, then marked done by ``PATH.complete``."""
    if paths.is_remote(path):
        return _produce_remote(path, make)
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.partial"
    if os.path.isdir(tmp):
        shutil.rmtree(tmp)
    elif os.path.exists(tmp):
        os.remove(tmp)
    make(tmp)
    os.replace(tmp, path)
    return path


def _produce_remote(path: str, make) -> str:
    marker = paths.Path(f"{path}.complete")
    if marker.exists():
        return path
    local = os.path.join(tempfile.mkdtemp(prefix="atlas-jax-produce-"), "made")
    try:
        make(local)
        target = paths.Path(path)
        if target.exists():  # an upload cut short by a kill
            target.rmtree() if target.is_dir() else target.unlink()
        if os.path.isdir(local):
            for root, _, names in os.walk(local):
                for name in names:
                    file = os.path.join(root, name)
                    paths.upload(file, paths.join(path, os.path.relpath(file, local)))
        else:
            paths.upload(local, path)
        marker.write_text("")
    finally:
        shutil.rmtree(os.path.dirname(local), ignore_errors=True)
    return path


# -- data ----------------------------------------------------------------------------------
def tokenizer_dir(cfg: AblationConfig, base_model: str | None, base_files: Sequence[str] = ()) -> str:
    """The tokenizer every stage uses; ``base_files``: the base stage's trajectories (`trained`)."""
    from atlas_jax.data.tiny_tokenizer import build_tiny_tokenizer
    out = paths.join(cfg.output_dir, "tokenizer")
    if cfg.tokenizer == "tiny":
        return produce(out, lambda tmp: build_tiny_tokenizer(tmp))
    if cfg.tokenizer == "trained":
        def train_tokenizer(tmp):
            if not base_files:
                raise ValueError("tokenizer: `trained` needs the base stage's trajectory files")
            build_tiny_tokenizer(tmp, vocab_size=cfg.tokenizer_vocab_size, corpus=_message_texts(base_files))
        return produce(out, train_tokenizer)
    if cfg.tokenizer:
        return cfg.tokenizer
    from atlas_jax.convert.checkpoint import default_tokenizer_dir  # config check: base.model is set
    return str(default_tokenizer_dir(base_model))


def _message_texts(files: Sequence[str]) -> list[str]:
    from atlas_jax.data.trajectory import read_trajectories

    trajectories, _ = read_trajectories(list(files))
    return [turn.content for t in trajectories for turn in t.turns]


def stage_files(cfg: AblationConfig, stage: Stage) -> list[str]:
    """The stage's trajectory files: its listed files, then its expert sets (generated once)."""
    for f in stage.data.files:
        if not paths.Path(f).is_file():
            raise FileNotFoundError(f"data file {f} does not exist")
    files = list(stage.data.files)
    for source in stage.data.experts:
        path = paths.join(cfg.output_dir, "data", f"{source.name}.jsonl")
        argv = ["--env", source.env, "--episodes", source.episodes, "--split", source.split, "--skip", source.skip,
                "--no-progress"] + (["--max-steps", source.max_steps] if source.max_steps else []) + family_argv(source)
        files.append(produce(path, lambda tmp: run_command("experts", argv + ["--out", tmp])))
    return files


# -- training ------------------------------------------------------------------------------
@dataclasses.dataclass
class Budget:
    steps: int  # optimizer steps for `epochs` passes over the data
    trained_positions: int  # positions with a non-zero loss weight
    tokens_processed: int  # real (non-padding) positions the model runs over
    padded_positions: int  # steps x batch x seq_len: what the accelerator computes


def _build_run_config(cfg: AblationConfig, stage: Stage, *, output_dir: str, files: list[str], tokenizer: str,
                      mask: str | None, init_from: str | None, seed: int):
    """train_config <- train <- stage.train <- the runner's keys; errors name the key."""
    from atlas_jax.config_loader import build, load_yaml, merge
    from atlas_jax.train.config import RunConfig

    data = merge(merge(load_yaml(cfg.train_config), cfg.train), stage.train)
    model = {"init_from": init_from, "config": None} if init_from else {}
    encode = {"weight_mode": "mask"} if mask else {"weight_mode": "all"}
    runner = {"output_dir": output_dir, "model": model,
              "data": {"train_files": files, "tokenizer": tokenizer, "mask_file": mask, "seed": seed,
                       "num_epochs": stage.epochs, "encode": encode},
              "train": {"seed": seed, "steps": 1}}
    return build(RunConfig, merge(data, runner))


def check_train_configs(cfg: AblationConfig) -> None:
    """Before any work: both stages' train configs load (placeholders for what only exists later)."""
    stages_ = [("finetune", cfg.finetune, "BASE")] + ([("base", cfg.base, None)] if cfg.base.model is None else [])
    for where, stage, init_from in stages_:
        try:
            _build_run_config(cfg, stage, output_dir="OUT", files=["DATA.jsonl"], tokenizer="TOKENIZER",
                              mask="MASK.jsonl" if where == "finetune" else None, init_from=init_from, seed=0)
        except ValueError as e:
            raise ValueError(f"{where} stage's train config ({cfg.train_config} + train + {where}.train): {e}") \
                from None


def run_config(cfg: AblationConfig, stage: Stage, **kwargs):
    """The train config of one stage, with train.steps = the batches of `stage.epochs` passes over its data."""
    run_cfg = _build_run_config(cfg, stage, **kwargs)
    budget = epoch_budget(run_cfg.data)
    return dataclasses.replace(run_cfg, train=dataclasses.replace(run_cfg.train, steps=budget.steps)), budget


def epoch_budget(data_cfg) -> Budget:
    """Iterate the exact batches training will see (same files, mask, packing and seed) and count
    them: every row then makes the same number of passes over the same trajectories."""
    from atlas_jax.data.pipeline import TrainData

    data = TrainData(data_cfg, process_index=0, process_count=1)
    profile = data.profile(num_epochs=data_cfg.num_epochs)
    if profile.batches == 0:
        raise ValueError(f"data {', '.join(data_cfg.train_files)}: no training batch ({data.summary()})")
    return Budget(profile.batches, profile.weighted_positions, profile.real_tokens,
                  profile.batches * data_cfg.global_batch_size * data_cfg.seq_len)


def train_stage(run_cfg, budget: Budget) -> dict:
    """Train (resuming from the stage's own checkpoints if a previous run was killed); the cost."""
    from atlas_jax.train.trainer import train

    print(f"ablate: train -> {run_cfg.output_dir}: {budget.steps} steps ({run_cfg.data.num_epochs} epochs of "
          f"{', '.join(run_cfg.data.train_files)}; mask {run_cfg.data.mask_file})", flush=True)
    start = time.perf_counter()
    result = train(run_cfg)
    if result.status == "preempted":
        raise StageError(f"training of {run_cfg.output_dir} was preempted at step {result.step}; rerun to resume")
    return {**dataclasses.asdict(budget), "train_seconds": round(time.perf_counter() - start, 2),
            "checkpoint": str(result.checkpoint_dir), "final_loss": result.losses.get(result.step)}


# -- scoring, selection ----------------------------------------------------------------------
def score(cfg: AblationConfig, model: str, tokenizer: str, files: list[str]) -> str:
    s = cfg.selection
    argv = ["--model", model, "--tokenizer", tokenizer, "--data", *files, "--seq-len", s.score_seq_len,
            "--batch-size", s.score_batch_size, "--variants", s.score_variants]
    argv += ["--dtype", s.score_dtype] if s.score_dtype else []
    path = paths.join(cfg.output_dir, "scores.jsonl")
    return produce(path, lambda tmp: run_command("score", argv + ["--out", tmp]))


def select(cfg: AblationConfig, selector: str, files: list[str], out: str, seed: int, *,
           scores: str | None = None, reference: str | None = None) -> str:
    s = cfg.selection
    argv = ["--selector", selector, "--ratio", cfg.ratio, "--data", *files, "--seed", seed]
    argv += ["--scores", scores] if scores else []
    argv += ["--mask", reference] if reference else []
    if selector == "score" and s.combine:
        argv += ["--combine", s.combine]
    if selector == "oracle":
        cache = paths.join(cfg.output_dir, "oracle-cache")
        argv += ["--oracle-url", s.oracle_url, "--oracle-model", s.oracle_model, "--oracle-cache", cache]
    return produce(out, lambda tmp: run_command("select", argv + ["--out", tmp]))


# -- evaluation ------------------------------------------------------------------------------
def eval_argv(model: str, tokenizer: str, env: EvalEnv, section: EvalSection, seed: int, out_dir: str) -> list:
    argv = ["--model", model, "--tokenizer", tokenizer, "--env", env.env, "--episodes", env.episodes,
            "--split", env.split, "--skip", env.skip, "--batch-size", section.batch_size,
            "--max-new-tokens", section.max_new_tokens, "--temperature", section.temperature, "--seed", seed,
            "--dtype", section.dtype, "--on-unparsable", section.on_unparsable,
            "--prefill-chunk", section.prefill_chunk, "--no-progress", "--out", out_dir]
    argv += ["--max-len", section.max_len] if section.max_len else []
    argv += ["--max-steps", section.max_steps] if section.max_steps else []
    argv += ["--server", env.server] if env.server else []
    return [str(a) for a in argv + family_argv(env)]


def family_argv(source) -> list:
    """`--families` / `--exclude-families` of an ExpertSource or EvalEnv."""
    return (["--families", source.families] if source.families else []) + (
        ["--exclude-families", source.exclude_families] if source.exclude_families else [])


def check_eval(section: EvalSection) -> None:
    """Before any training: `server:` needs eval's --server, and every entry must parse as eval arguments."""
    served = [e.label for e in section.envs if e.server]
    if served and not command_accepts("eval", "--server"):
        raise ValueError(f"eval: {', '.join(served)} set `server:` but this atlas-jax's `eval` has no --server "
                         "option (evaluation against AgentGym servers is not available in this build)")
    parser, _ = command_parser("eval")
    for env in section.envs:
        try:
            parser.parse_args(eval_argv("MODEL", "TOKENIZER", env, section, 0, "OUT"))
        except ValueError as e:
            raise ValueError(f"eval entry {env.label}: {e}") from None


def evaluate(model: str, tokenizer: str, env: EvalEnv, section: EvalSection, seed: int, out_dir: str) -> str:
    """Episodes of one environment -> ``out_dir/<env>.jsonl`` (one line per episode); returns its path."""
    run_command("eval", eval_argv(model, tokenizer, env, section, seed, out_dir))
    path = paths.join(out_dir, f"{env.env}.jsonl")
    if not paths.Path(path).is_file():
        found = sorted(p.name for p in paths.Path(out_dir).iterdir())
        raise FileNotFoundError(f"atlas-jax eval wrote no {path} (found: {found})")
    return path
