"""`atlas-jax score --model MODEL --tokenizer TOK --data TRAJ --out SCORES`: per-step importance metrics.

Runs the JAX scoring pass (atlas_jax.selection.score_pass) over every trajectory, sharded over
all local devices (batch over data x fsdp), and writes scores JSONL (atlas_jax.selection.scores_io).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys

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
    parser.add_argument("--attention", choices=("xla", "cudnn"), help="attention kernel (default: the model's)")
    parser.add_argument("--mesh", default="1,-1,1", help="data,fsdp,tensor mesh sizes (-1 fills; default 1,-1,1)")
    parser.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                        help="bad trajectory records: stop (default) or skip and count them")


def run(args: argparse.Namespace) -> int:
    from atlas_jax.convert.checkpoint import default_tokenizer_dir, load_pretrained
    from atlas_jax.data.encode import load_tokenizer
    from atlas_jax.data.trajectory import read_trajectories
    from atlas_jax.outputs import prepare_output
    from atlas_jax.selection import seq_len as seq_lens
    from atlas_jax.selection.score_pass import ScoreOptions, score_trajectories
    from atlas_jax.selection.scores_io import write_scores
    from atlas_jax.sharding import MeshConfig, build_mesh

    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    variants = ("full",) + tuple(v for v in variants if v != "full")
    # without --seq-len, a placeholder that passes validation until the data sets the real one
    placeholder = math.lcm(seq_lens.ROUND_TO, max(args.chunk, 1))
    options = ScoreOptions(seq_len=args.seq_len or placeholder, batch_size=args.batch_size, variants=variants,
                           chunk=args.chunk, group_size=args.group_size)
    mesh = build_mesh(MeshConfig.parse(args.mesh))
    options.validate(mesh)  # before loading anything
    prepare_output(args.out, inputs=[*args.data, args.model])  # a whole scoring pass is never lost at the end
    trajectories, read_report = read_trajectories(args.data, on_error=args.on_error)
    print(f"trajectories: {read_report.summary()}")
    tokenizer = load_tokenizer(args.tokenizer or default_tokenizer_dir(args.model))
    seq_len, chose, warning = seq_lens.choose_seq_len(
        args.seq_len, seq_lens.measure(trajectories, tokenizer, options.span_method), args.chunk,
        seq_lens.model_max_positions(args.model))
    options = dataclasses.replace(options, seq_len=seq_len)
    options.validate(mesh)  # a default is a multiple of the chunk; checked again all the same
    print(chose)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    from atlas_jax.platform_defaults import resolve_dtype

    dtype, chosen = resolve_dtype(args.dtype)
    print(f"compute dtype: {dtype} ({chosen})")
    overrides = {k: v for k, v in (("dtype", dtype), ("attention", args.attention)) if v}
    model = load_pretrained(args.model, mesh=mesh, **overrides)
    records, report = score_trajectories(trajectories, tokenizer, model, options, mesh)
    scorer = {"model": os.path.abspath(args.model), "dtype": model.cfg.dtype, "variants": list(variants),
              "seq_len": options.seq_len}
    written = write_scores(args.out, records, scorer)
    print(report.summary())
    null, total = seq_lens.null_steps(records)
    if null:
        print(f"WARNING: {null} of {total} step scores are null (their sequences were cut to seq_len "
              f"{options.seq_len}); select treats those steps as unscored", file=sys.stderr, flush=True)
    print(f"wrote {written} records to {args.out}")
    return 0
