"""`atlas-jax eval --model MODEL --env ENV [ENV ...] --episodes N [--split eval] [--out DIR]`.

Runs the model as the agent, batched over episodes, and writes ``DIR/<env>.jsonl`` (one line
per episode: task, turns, reward, success, end reason, the conversation) and
``DIR/summary.json`` / ``DIR/summary.md`` (success rate, mean reward, mean turns per env).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from atlas_jax.envs.registry import ENVS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="atlas-jax checkpoint or Hugging Face model directory")
    parser.add_argument("--env", required=True, nargs="+", choices=sorted(ENVS), help="environment(s)")
    parser.add_argument("--episodes", type=int, required=True, help="tasks per environment")
    parser.add_argument("--split", default="eval", choices=("train", "eval"), help="which task indices")
    parser.add_argument("--skip", type=int, default=0, help="skip this many task indices of the split first")
    parser.add_argument("--out", default="eval_out", help="output directory (default: eval_out)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer directory (default: MODEL/tokenizer for a checkpoint, MODEL for an HF dir)")
    parser.add_argument("--batch-size", type=int, default=8, help="episodes generated together")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="per assistant turn")
    parser.add_argument("--max-len", type=int, default=None,
                        help="context length; a prompt that leaves no room for --max-new-tokens ends the episode "
                             "(default: the model's max_position_embeddings)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=None, help="per-episode step limit (env default)")
    parser.add_argument("--on-unparsable", default="end", choices=("end", "continue"),
                        help="a response without 'Action:' ends the episode (default) or gets the env's error")
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                        help="compute dtype (default: float32 on CPU, bfloat16 on GPU/TPU)")
    parser.add_argument("--mesh", default="1,-1,1", metavar="DATA,FSDP,TENSOR",
                        help="device mesh, as in training (default 1,-1,1: all devices on fsdp)")
    parser.add_argument("--prompt-bucket", type=int, default=256,
                        help="prompts are padded to a multiple of this (one compilation per bucket)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def eos_config_files(model_dir: str) -> list[Path]:
    """The config files of a MODEL directory that may hold eos ids."""
    from atlas_jax.convert.checkpoint import HF_META_DIR, is_checkpoint_dir

    root = Path(model_dir)
    meta = root / HF_META_DIR if is_checkpoint_dir(root) else root
    return [meta / "generation_config.json", meta / "config.json"]



def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from atlas_jax.convert.checkpoint import default_tokenizer_dir, load_pretrained
    from atlas_jax.data.encode import load_tokenizer
    from atlas_jax.envs.evaluate import evaluate, write_summary
    from atlas_jax.envs.model_policy import ModelPolicy
    from atlas_jax.envs.registry import make_env
    from atlas_jax.model.stop_tokens import stop_token_ids
    from atlas_jax.platform_defaults import resolve_dtype
    from atlas_jax.sharding import MeshConfig, build_mesh

    if args.episodes <= 0 or args.batch_size <= 0 or args.max_new_tokens <= 0:
        raise ValueError("--episodes, --batch-size and --max-new-tokens must be positive")
    mesh = build_mesh(MeshConfig.parse(args.mesh))
    config_paths = eos_config_files(args.model)
    tokenizer = load_tokenizer(args.tokenizer or default_tokenizer_dir(args.model))
    dtype, chosen = resolve_dtype(args.dtype)
    print(f"eval: compute dtype {dtype} ({chosen})", file=sys.stderr)
    model = load_pretrained(args.model, mesh=mesh, dtype=dtype)
    cfg = model.cfg
    stop_ids = stop_token_ids(tokenizer, config_paths, extra=[] if cfg.eos_token_id is None else
                              ([cfg.eos_token_id] if isinstance(cfg.eos_token_id, int) else cfg.eos_token_id))
    max_len = args.max_len or cfg.max_position_embeddings
    policy = ModelPolicy(model, tokenizer, stop_ids, max_len=max_len, max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_p=args.top_p, seed=args.seed, batch_size=args.batch_size,
                         prompt_bucket=args.prompt_bucket)
    print(f"eval: model {args.model} ({cfg.model_type}, {cfg.num_layers} layers), mesh {dict(mesh.shape)}, "
          f"stop ids {stop_ids}, max_len {max_len}", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    summaries = []
    for env_name in args.env:
        out_path = os.path.join(args.out, f"{env_name}.jsonl")
        with tqdm(total=args.episodes, desc=f"eval {env_name}", unit="ep", file=sys.stderr,
                  disable=args.no_progress) as bar:
            def progress(episode, bar=bar):
                bar.update(1)
                bar.set_postfix(end=episode.end_reason)
            summaries.append(evaluate(env_name, lambda: make_env(env_name, max_steps=args.max_steps), policy,
                                      episodes=args.episodes, split=args.split, skip=args.skip,
                                      batch_size=args.batch_size, on_unparsable=args.on_unparsable,
                                      out_path=out_path, progress=progress))
        print(f"wrote {summaries[-1].episodes} episodes to {out_path}")
    stats = policy.stats
    generation = {"calls": stats.calls, "rows": stats.rows, "generated_tokens": stats.tokens,
                  "prompt_tokens": stats.prompt_tokens, "seconds": round(stats.seconds, 3),
                  "tokens_per_second": round(stats.tokens_per_second, 2)}
    table = write_summary(args.out, summaries, {"model": str(args.model), "generation": generation})
    print(table)
    print(f"generation: {stats.tokens} tokens in {stats.seconds:.1f} s ({stats.tokens_per_second:.1f} tokens/s, "
          f"compilation included); summary in {os.path.join(args.out, 'summary.md')}")
    return 0
