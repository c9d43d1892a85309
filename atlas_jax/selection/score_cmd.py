"""`atlas-jax score --model MODEL --tokenizer TOK --data TRAJ --out SCORES`: per-step importance metrics.

Runs the JAX scoring pass (atlas_jax.selection.score_pass) over every trajectory, sharded over
all local devices (batch over data x fsdp), and writes scores JSONL (atlas_jax.selection.scores_io).
Several processes (a pod, a SLURM job) split the trajectories, balanced by length, each scoring its
share with its own model replica; process 0 writes the one output in input order
(atlas_jax.multihost_split). Finished parts survive a killed run and are not scored again.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys

from atlas_jax.model.config import ATTENTION_IMPLS
from atlas_jax.selection.variants import VARIANTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="atlas-jax checkpoint or Hugging Face model directory")
    parser.add_argument("--tokenizer", help="tokenizer directory (default: MODEL/tokenizer, else MODEL)")
    parser.add_argument("--data", required=True, nargs="+", help="trajectory files (JSONL/JSON)")
    parser.add_argument("--out", required=True, help="scores JSONL to write")
    parser.add_argument("--seq-len", type=int,
                        help="packed row length (default: covers the longest trajectory, rounded up to a multiple "
                             "of 256, at most the model's max_position_embeddings; a shorter one leaves the cut "
                             "steps' scores null, and says how many)")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per batch, over all devices (default 8)")
    parser.add_argument("--group-size", type=int, default=512,
                        help="trajectories encoded and packed at a time (bounds host memory; default 512)")
    parser.add_argument("--chunk", type=int, default=256, help="positions per logits chunk (default 256)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma list of passes: full (always), prompt_only (ifd), no_obs (obs_dependence)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), help="compute dtype (default: float32 on CPU, bfloat16 on GPU/TPU)")
    parser.add_argument("--attention", choices=ATTENTION_IMPLS, help="attention kernel (default: the model's)")
    parser.add_argument("--mesh", default="1,-1,1", help="data,fsdp,tensor mesh sizes (-1 fills; default 1,-1,1)")
    parser.add_argument("--part-size", type=int, default=1024,
                        help="trajectories per saved part: what a killed run can lose; each part compiles the "
                             "scoring step afresh (default 1024)")
    parser.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                        help="bad trajectory records: stop (default) or skip and count them")


def run(args: argparse.Namespace) -> int:
    from atlas_jax.multihost_split import join_cluster

    index, count = join_cluster()  # before anything touches a JAX device
    import jax

    from atlas_jax.convert.checkpoint import default_tokenizer_dir, load_pretrained
    from atlas_jax.data.encode import load_tokenizer
    from atlas_jax.data.trajectory import read_trajectories
    from atlas_jax.multihost_split import Parts, balanced_shares, stable_path
    from atlas_jax.outputs import prepare_output
    from atlas_jax.platform_defaults import resolve_dtype
    from atlas_jax.selection import seq_len as seq_lens
    from atlas_jax.selection.score_pass import ScoreOptions, ScoreReport, score_trajectories
    from atlas_jax.selection.scores_io import write_scores
    from atlas_jax.sharding import MeshConfig, build_mesh

    if args.part_size < 1:
        raise ValueError(f"--part-size must be positive, got {args.part_size}")
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    variants = ("full",) + tuple(v for v in variants if v != "full")
    # without --seq-len, a placeholder that passes validation until the data sets the real one
    placeholder = math.lcm(seq_lens.ROUND_TO, max(args.chunk, 1))
    options = ScoreOptions(seq_len=args.seq_len or placeholder, batch_size=args.batch_size, variants=variants,
                           chunk=args.chunk, group_size=args.group_size)
    mesh = build_mesh(MeshConfig.parse(args.mesh), devices=jax.local_devices())  # one replica per process
    options.validate(mesh)  # before loading anything
    prepare_output(args.out, inputs=[*args.data, args.model])  # a whole scoring pass is never lost at the end
    trajectories, read_report = read_trajectories(args.data, on_error=args.on_error)
    print(f"trajectories: {read_report.summary()}")
    tokenizer_dir = args.tokenizer or default_tokenizer_dir(args.model)
    tokenizer = load_tokenizer(tokenizer_dir)
    # from every trajectory, before the split: all processes score at the same length
    seq_len, chose, warning = seq_lens.choose_seq_len(
        args.seq_len, seq_lens.measure(trajectories, tokenizer, options.span_method), args.chunk,
        seq_lens.model_max_positions(args.model))
    options = dataclasses.replace(options, seq_len=seq_len)
    options.validate(mesh)  # a default is a multiple of the chunk; checked again all the same
    print(chose)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    dtype, chosen = resolve_dtype(args.dtype)
    print(f"compute dtype: {dtype} ({chosen})")
    scorer = {"model": stable_path(args.model), "dtype": dtype, "variants": list(variants),
              "seq_len": options.seq_len}
    parts = Parts(args.out, run={**scorer, "tokenizer": stable_path(tokenizer_dir), "attention": args.attention,
                                 "data": data_digest(trajectories)}, process_index=index, process_count=count)
    done = parts.start()
    costs = [sum(len(t.content) for t in traj.turns) for traj in trajectories]  # ~ tokens: the pass is O(tokens)
    mine = balanced_shares(costs, count, skip=done)[index]
    where = f"process {index} of {count}: " if count > 1 else ""
    print(f"{where}{len(mine)} trajectories to score ({len(done)} finished by an earlier run)")
    overrides = {k: v for k, v in (("dtype", dtype), ("attention", args.attention)) if v}
    model = load_pretrained(args.model, mesh=mesh, **overrides)  # every process: loading may synchronise them
    total = ScoreReport()
    for start in range(0, len(mine), args.part_size):
        positions = mine[start:start + args.part_size]
        records, report = score_trajectories([trajectories[p] for p in positions], tokenizer, model, options, mesh)
        parts.save(list(zip(positions, records)))
        for field in dataclasses.fields(ScoreReport):  # counts and seconds add up over the parts
            value = getattr(report, field.name)
            if isinstance(value, (int, float)):
                setattr(total, field.name, getattr(total, field.name) + value)
    print(where + total.summary())
    merged = parts.merge(len(trajectories), lambda path, records: write_scores(path, records, scorer))
    if merged is not None:
        print(f"wrote {len(merged)} records to {args.out}")
        null, steps = seq_lens.null_steps(merged)
        if null:
            print(f"WARNING: {null} of {steps} step scores are null (their sequences were cut to seq_len "
                  f"{options.seq_len}); select treats those steps as unscored", file=sys.stderr, flush=True)
    return 0


def data_digest(trajectories) -> str:
    """Identifies the input list (ids, turns, loss flags, order): parts of a killed run are reused only for it."""
    h = hashlib.sha256()
    for traj in trajectories:
        h.update(json.dumps([traj.item_id, [[t.role, t.content, t.loss] for t in traj.turns]]).encode())
    return h.hexdigest()
