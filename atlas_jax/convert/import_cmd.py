"""`atlas-jax import --hf HF_DIR --out CKPT_DIR`: Hugging Face model -> atlas-jax checkpoint."""
from __future__ import annotations

import argparse
import time

from atlas_jax.convert.atomic_dir import atomic_dir, check_not_input


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hf", required=True, help="Hugging Face model directory (config.json + *.safetensors)")
    parser.add_argument("--out", required=True, help="checkpoint directory to create")
    parser.add_argument("--tokenizer", help="tokenizer directory to store with the checkpoint (default: --hf)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    from flax import nnx

    from atlas_jax.convert.checkpoint import load_hf, save_params, write_model_metadata

    start = time.time()
    check_not_input(args.out, [args.hf, args.tokenizer])  # before the (slow) load
    model = load_hf(args.hf, dtype="float32")
    with atomic_dir(args.out, overwrite=args.overwrite, inputs=[args.hf, args.tokenizer]) as temp:
        write_model_metadata(temp, model.cfg, hf_dir=args.hf, tokenizer_dir=args.tokenizer or args.hf)
        save_params(temp, model, step=0)
    n = sum(v.size for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
    cfg = model.cfg
    print(f"imported {cfg.model_type} ({cfg.num_layers} layers, hidden {cfg.hidden_size}, {n:,} parameters) "
          f"from {args.hf} -> {args.out} in {time.time() - start:.1f}s")
    return 0
