"""`atlas-jax eval --model MODEL --env ENV [ENV ...] --episodes N [--split eval] [--out DIR]`.

Runs the model as the agent, batched over episodes, and writes ``DIR/<env>.jsonl`` (one line
per episode: task, turns, reward, success, end reason, the conversation) and
``DIR/summary.json`` / ``DIR/summary.md`` (success rate, mean reward, mean turns per env).
Several processes (ATLAS_COORDINATOR..., a pod, a SLURM job) split the episodes; the files are the
same as one process writes (atlas_jax.envs.evaluate). ``--batch-size`` is per process.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys

from etils.epath import Path  # MODEL and --out may be gs:// URLs

from atlas_jax.envs.agentgym_protocol import PROTOCOLS
from atlas_jax.envs.base import TaskFamilies, add_family_arguments
from atlas_jax.envs.registry import ENVS

DEFAULT_MAX_LEN = 4096  # AgentGym's evaluator ends an episode whose conversation reaches 4096 tokens


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="atlas-jax checkpoint or Hugging Face model directory")
    parser.add_argument("--env", required=True, nargs="+", choices=sorted(set(ENVS) | set(PROTOCOLS)),
                        help=f"environment(s); in process: {', '.join(sorted(ENVS))}; with --server also the "
                             f"other AgentGym environments")
    parser.add_argument("--episodes", type=int, required=True, help="tasks per environment")
    parser.add_argument("--server", default=None, metavar="URL",
                        help="play against an AgentGym environment server (AgentGym's own or `atlas-jax serve-env`) "
                             "instead of the in-process env, e.g. http://127.0.0.1:36001 (maze/wordle: .../maze)")
    parser.add_argument("--task-ids", default=None, metavar="IDS",
                        help="task indices (data_idx) to play, e.g. 0-9,20; default: the split's first --episodes "
                             "after --skip (in process) or --skip, --skip+1, ... (with --server)")
    parser.add_argument("--timeout", type=float, default=300.0, help="--server: seconds per request (default 300)")
    parser.add_argument("--retries", type=int, default=3, help="--server: retries of transient failures (default 3)")
    parser.add_argument("--split", default="eval", choices=("train", "eval"), help="which task indices")
    parser.add_argument("--skip", type=int, default=0, help="skip this many task indices of the split first")
    add_family_arguments(parser)
    parser.add_argument("--out", default="eval_out", help="output directory (default: eval_out)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer directory (default: MODEL/tokenizer for a checkpoint, MODEL for an HF dir)")
    parser.add_argument("--batch-size", type=int, default=8, help="episodes generated together")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="per assistant turn")
    parser.add_argument("--max-len", type=int, default=None,
                        help="context length (and KV cache slots); a prompt that leaves no room for "
                             "--max-new-tokens ends the episode (default: the model's max_position_embeddings, at most "
                             f"{DEFAULT_MAX_LEN}, the max_length of AgentGym's evaluation)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=None, help="per-episode step limit (env default)")
    parser.add_argument("--on-unparsable", default=None, choices=("end", "continue"),
                        help="a response without 'Action:' ends the episode or goes to the env's client parse "
                             "(default: end in process; continue with --server, as AgentGym's evaluator does)")
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                        help="compute dtype (default: float32 on CPU, bfloat16 on GPU/TPU)")
    parser.add_argument("--mesh", default="1,-1,1", metavar="DATA,FSDP,TENSOR",
                        help="device mesh, as in training (default 1,-1,1: all devices on fsdp)")
    parser.add_argument("--prefill-chunk", type=int, default=256,
                        help="new prompt tokens are prefilled in chunks of this many (one compiled shape)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def eos_config_files(model_dir: str) -> list[Path]:
    """The config files of a MODEL directory that may hold eos ids."""
    from atlas_jax.convert.checkpoint import HF_META_DIR, is_checkpoint_dir

    root = Path(model_dir)
    meta = root / HF_META_DIR if is_checkpoint_dir(root) else root
    return [meta / "generation_config.json", meta / "config.json"]



def parse_task_ids(text: str) -> list[int]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]``."""
    ids: list[int] = []
    for part in text.split(","):
        first, sep, last = part.strip().partition("-")
        try:
            ids += list(range(int(first), int(last) + 1)) if sep else [int(first)]
        except ValueError:
            raise ValueError(f"--task-ids: {part.strip()!r} is not an index or a range A-B") from None
    return ids


def env_factory(env_name: str, args: argparse.Namespace):
    """(make_env, task indices or None, protocol description, score scale) for one environment."""
    from atlas_jax.envs.registry import env_class, make_env

    ids = parse_task_ids(args.task_ids)[:args.episodes] if args.task_ids else None
    families = TaskFamilies.parse(args.families, args.exclude_families)
    if families and (args.server or ids):
        raise ValueError("--families / --exclude-families choose tasks of the in-process environments; "
                         "with --server or --task-ids give the task indices themselves")
    if args.server:
        from atlas_jax.envs.agentgym_client import RemoteEnv

        if env_name not in PROTOCOLS:
            raise ValueError(f"--env {env_name}: no AgentGym protocol for it; with --server use one of "
                             f"{', '.join(sorted(PROTOCOLS))}")

        return (lambda: RemoteEnv(env_name, args.server, args.max_steps, timeout=args.timeout, retries=args.retries),
                ids or list(range(args.skip, args.skip + args.episodes)),
                f"AgentGym HTTP protocol at {args.server} (react format, max rounds "
                f"{args.max_steps or PROTOCOLS[env_name].max_rounds})", PROTOCOLS[env_name].score_scale)
    if env_name not in ENVS:
        raise ValueError(f"--env {env_name}: not available in process (only {', '.join(sorted(ENVS))}); "
                         f"give --server URL of an AgentGym {env_name} server")
    if families:
        with contextlib.closing(make_env(env_name)) as probe:
            ids = probe.task_indices(args.split, args.episodes, start=args.skip, families=families)
        if not ids:
            raise ValueError(f"--env {env_name}: no task of split {args.split!r} after skipping {args.skip} "
                             f"({families})")
    return (lambda: make_env(env_name, max_steps=args.max_steps), ids, "in-process atlas-jax environment",
            float(getattr(env_class(env_name), "score_scale", 100.0)))


def run(args: argparse.Namespace) -> int:
    from atlas_jax.multihost_split import join_cluster, stable_path

    index, count = join_cluster()  # before anything touches a JAX device
    import jax
    from tqdm import tqdm

    from atlas_jax.convert.checkpoint import default_tokenizer_dir, load_pretrained
    from atlas_jax.data.encode import load_tokenizer
    from atlas_jax.envs.evaluate import evaluate, write_summary
    from atlas_jax.envs.model_policy import ModelPolicy
    from atlas_jax.model.stop_tokens import stop_token_ids
    from atlas_jax.platform_defaults import resolve_dtype
    from atlas_jax.sharding import MeshConfig, build_mesh
    from atlas_jax.train.multihost import gather_json

    if args.episodes <= 0 or args.batch_size <= 0 or args.max_new_tokens <= 0:
        raise ValueError("--episodes, --batch-size and --max-new-tokens must be positive")
    factories = {env_name: env_factory(env_name, args) for env_name in args.env}  # bad --env/--task-ids first
    on_unparsable = args.on_unparsable or ("continue" if args.server else "end")
    mesh = build_mesh(MeshConfig.parse(args.mesh), devices=jax.local_devices())  # one replica per process
    config_paths = eos_config_files(args.model)
    tokenizer_dir = args.tokenizer or default_tokenizer_dir(args.model)
    tokenizer = load_tokenizer(tokenizer_dir)
    dtype, chosen = resolve_dtype(args.dtype)
    print(f"eval: compute dtype {dtype} ({chosen})", file=sys.stderr)
    # layers under lax.scan: one compiled layer instead of num_layers (SmolLM2 on CPU: the first turn 51 s
    # instead of 183 s), the same numbers and the same speed once compiled
    model = load_pretrained(args.model, mesh=mesh, dtype=dtype, scan_layers=True)
    cfg = model.cfg
    stop_ids = stop_token_ids(tokenizer, config_paths, extra=[] if cfg.eos_token_id is None else
                              ([cfg.eos_token_id] if isinstance(cfg.eos_token_id, int) else cfg.eos_token_id))
    max_len = args.max_len or min(cfg.max_position_embeddings, DEFAULT_MAX_LEN)
    share = -(-args.episodes // count)  # the most episodes one process plays
    policy = ModelPolicy(model, tokenizer, stop_ids, max_len=max_len, max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                         batch_size=min(args.batch_size, share),  # rows of the KV cache: no idle ones
                         prefill_chunk=args.prefill_chunk)
    where = f", process {index} of {count}" if count > 1 else ""
    print(f"eval: model {args.model} ({cfg.model_type}, {cfg.num_layers} layers), mesh {dict(mesh.shape)}, "
          f"stop ids {stop_ids}, max_len {max_len}{where}", file=sys.stderr)
    # what makes two attempts' episodes comparable: a killed run's finished episodes are reused only under these
    run_options = {"model": stable_path(args.model), "tokenizer": stable_path(tokenizer_dir), "dtype": dtype,
                   "server": args.server, "max_len": max_len, "max_new_tokens": args.max_new_tokens,
                   "temperature": args.temperature, "top_p": args.top_p, "seed": args.seed,
                   "max_steps": args.max_steps, "on_unparsable": on_unparsable}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    summaries = []
    for env_name in args.env:
        out_path = str(Path(args.out) / f"{env_name}.jsonl")
        with tqdm(total=args.episodes, desc=f"eval {env_name}", unit="ep", file=sys.stderr,
                  disable=args.no_progress) as bar:
            def progress(episode, bar=bar):
                bar.update(1)
                bar.set_postfix(end=episode.end_reason)
            make_env, task_ids, protocol, scale = factories[env_name]
            summaries.append(evaluate(env_name, make_env, policy, episodes=args.episodes, split=args.split,
                                      skip=args.skip, batch_size=args.batch_size, on_unparsable=on_unparsable,
                                      out_path=out_path, progress=progress, task_indices=task_ids,
                                      protocol=protocol, score_scale=scale, run=run_options))
        if index == 0:
            print(f"wrote {summaries[-1].episodes} episodes to {out_path}")
    stats = gather_json(dataclasses.asdict(policy.stats))  # every process's generation
    if index != 0:
        return 0
    tokens, seconds = sum(s["tokens"] for s in stats), max(s["seconds"] for s in stats)
    generation = {"calls": sum(s["calls"] for s in stats), "rows": sum(s["rows"] for s in stats),
                  "generated_tokens": tokens, "prompt_tokens": sum(s["prompt_tokens"] for s in stats),
                  "prefilled_tokens": sum(s["prefilled_tokens"] for s in stats), "dtype": dtype,
                  "call_seconds": [c for s in stats for c in s["call_seconds"]], "seconds": round(seconds, 3),
                  "tokens_per_second": round(tokens / seconds if seconds else 0.0, 2), "processes": count}
    table = write_summary(args.out, summaries, {"model": str(args.model), "generation": generation})
    print(table)
    print(f"generation: {tokens} tokens in {seconds:.1f} s ({generation['tokens_per_second']:.1f} tokens/s, "
          f"compilation included{', over ' + str(count) + ' processes' if count > 1 else ''}; "
          f"{generation['prefilled_tokens']} of {generation['prompt_tokens']} prompt tokens prefilled, "
          f"the rest from the KV cache); summary in {Path(args.out) / 'summary.md'}")
    return 0
