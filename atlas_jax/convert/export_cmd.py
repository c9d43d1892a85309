"""`atlas-jax export --checkpoint CKPT_DIR --out HF_DIR [--tokenizer TOK_DIR]`."""
from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="atlas-jax checkpoint directory (from `import` or training)")
    parser.add_argument("--out", required=True, help="Hugging Face directory to create")
    parser.add_argument("--tokenizer", help="tokenizer directory (default: the checkpoint's own, if stored)")
    parser.add_argument("--step", type=int, help="checkpoint step to export (default: latest)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                        help="tensor dtype (default: the source model's dtype, else float32)")
    parser.add_argument("--max-shard-size", type=float, default=5.0, help="GiB per safetensors shard (default 5)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    from atlas_jax.convert.export import export_checkpoint

    start = time.time()
    out = export_checkpoint(args.checkpoint, args.out, tokenizer_dir=args.tokenizer, step=args.step,
                            dtype=args.dtype, max_shard_bytes=int(args.max_shard_size * 2**30),
                            overwrite=args.overwrite)
    files = sorted(p.name for p in out.iterdir())
    print(f"exported {args.checkpoint} -> {out} in {time.time() - start:.1f}s: {', '.join(files)}")
    return 0
