"""What an ATLaS epoch costs next to an all-steps epoch, on the same data, in one run.

    python benchmarks/atlas_cost.py                      # CPU shape: hidden 256, 4 layers, MLP 1024, vocab 4096
    python benchmarks/atlas_cost.py --shape 1b           # GPU: the Llama-3.2-1B shape (bf16)

Rows (one epoch of the bundled sample each, the same packing settings, compiled ahead of time
so the wall time is training only; batches are built before the clock starts):
  * all steps, dense LM head   what a standard SFT trainer pays (the baseline of the ratio)
  * all steps, sparse LM head
  * ATLaS 30%, sparse LM head  a random 30% critical-step mask (``select_random``, seed 0):
                               loss only on those steps, tails after the last one cut
Printed per row: steps, wall time, trained positions (weight > 0), real (non-padding) tokens,
and wall time relative to the baseline. The target is ATLaS-30% <= 0.75x the baseline.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = [os.path.join(REPO, "data/sample/babyai_train.jsonl"), os.path.join(REPO, "data/sample/textcraft_train.jsonl")]
SHAPES = {
    "cpu": dict(vocab_size=4096, hidden_size=256, intermediate_size=1024, num_layers=4, num_heads=4, num_kv_heads=2,
                head_dim=64),
    "1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32,
               num_kv_heads=8, head_dim=64, rope_theta=500000.0),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), help="default: 1b with a GPU, cpu without")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--ratio", type=float, default=0.3, help="critical-step ratio of the ATLaS mask")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), help="default: bfloat16 on GPU, float32 on CPU")
    p.add_argument("--attention", choices=("xla", "cudnn"), help="default: cudnn on GPU with bfloat16")
    p.add_argument("--tokenizer", help="HF tokenizer directory (default: the tiny tokenizer, built here)")
    p.add_argument("--json", metavar="OUT")
    return p.parse_args(argv)


def random_mask(path: str, ratio: float) -> None:
    from atlas_jax.data.trajectory import read_trajectories
    from atlas_jax.selection.mask_writer import write_mask
    from atlas_jax.selection.selectors import select_random

    trajectories, _ = read_trajectories(SAMPLE)
    write_mask(path, [select_random(t, ratio, seed=0) for t in trajectories],
               {"name": "random", "ratio": ratio, "seed": 0})


def epoch(name: str, model_cfg, data_cfg, lm_head: str) -> dict:
    """One epoch of ``data_cfg``'s batches; the step is compiled before the clock starts."""
    import jax
    import jax.numpy as jnp

    from atlas_jax.data.pipeline import TrainData, to_global_batch
    from atlas_jax.model import init_model
    from atlas_jax.sharding import MeshConfig, build_mesh
    from atlas_jax.train.config import OptimSection, TrainSection
    from atlas_jax.train.loss import head_capacity
    from atlas_jax.train.optimizer import make_optimizer
    from atlas_jax.train.step import build_steps

    data = TrainData(data_cfg)
    profile = data.profile(num_epochs=1)
    host_batches = list(data)  # num_epochs=1: exactly the profiled epoch
    mesh = build_mesh(MeshConfig(num_devices=1))
    capacity = head_capacity(profile.max_row_weighted, data_cfg.seq_len) if lm_head == "sparse" else None
    tx, schedule = make_optimizer(OptimSection(learning_rate=1e-3), len(host_batches))
    steps = build_steps(init_model(model_cfg, 0, mesh), tx, schedule, mesh, 1, TrainSection.loss_chunk_tokens,
                        capacity)
    batches = [to_global_batch(b, mesh) for b in host_batches]
    params, opt_state = steps.params, steps.opt_state
    compiled = steps.train.lower(params, opt_state, batches[0], jnp.asarray(0, jnp.int32)).compile()
    dense_steps = 0
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        params, opt_state, metrics = compiled(params, opt_state, batch, jnp.asarray(i, jnp.int32))
        dense_steps += metrics["lm_head_dense"]
    loss = float(jax.block_until_ready(metrics["loss"]))
    wall = time.perf_counter() - start
    return {"row": name, "lm_head": lm_head, "capacity": capacity, "steps": len(batches), "wall_s": wall,
            "trained_positions": profile.weighted_positions, "real_tokens": profile.real_tokens,
            "padded_tokens": len(batches) * data_cfg.global_batch_size * data_cfg.seq_len,
            "dense_fallback_steps": int(dense_steps), "last_loss": loss}


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    from atlas_jax.data.encode import EncodeOptions
    from atlas_jax.data.pipeline import DataConfig
    from atlas_jax.model import ModelConfig

    gpu = jax.default_backend() == "gpu"
    args.shape = args.shape or ("1b" if gpu else "cpu")
    args.dtype = args.dtype or ("bfloat16" if gpu else "float32")
    args.attention = args.attention or ("cudnn" if gpu and args.dtype == "bfloat16" else "xla")
    model_cfg = ModelConfig(model_type="llama", **SHAPES[args.shape], tie_word_embeddings=True,
                            max_position_embeddings=max(args.seq_len, 8192), dtype=args.dtype,
                            attention=args.attention)
    work = tempfile.mkdtemp(prefix="atlas_cost_")
    tokenizer = args.tokenizer
    if tokenizer is None:
        from atlas_jax.data.tiny_tokenizer import build_tiny_tokenizer
        tokenizer = build_tiny_tokenizer(os.path.join(work, "tokenizer"))
    mask = os.path.join(work, "mask.jsonl")
    random_mask(mask, args.ratio)

    def data_cfg(weight_mode: str, mask_file: str | None):
        return DataConfig(train_files=SAMPLE, tokenizer=tokenizer, seq_len=args.seq_len,
                          global_batch_size=args.batch, mask_file=mask_file, num_epochs=1, seed=0,
                          encode=EncodeOptions(weight_mode=weight_mode))

    rows = [epoch("all steps, dense head", model_cfg, data_cfg("all", None), "dense"),
            epoch("all steps, sparse head", model_cfg, data_cfg("all", None), "sparse"),
            epoch(f"ATLaS {args.ratio:.0%}, sparse head", model_cfg, data_cfg("mask", mask), "sparse")]
    base = rows[0]["wall_s"]
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); shape {args.shape}: hidden "
          f"{model_cfg.hidden_size}, {model_cfg.num_layers} layers, MLP {model_cfg.intermediate_size}, vocab "
          f"{model_cfg.vocab_size}; batch {args.batch} x {args.seq_len}; {args.dtype}, attention {args.attention}")
    header = (f"{'row':<26} | {'steps':>5} | {'wall s':>8} | {'trained pos':>11} | {'real tokens':>11} | "
              f"{'trained/real':>12} | {'vs base':>7}")
    print(header)
    print("-" * len(header))
    for r in rows:
        r["wall_ratio"] = r["wall_s"] / base
        print(f"{r['row']:<26} | {r['steps']:>5} | {r['wall_s']:>8.2f} | {r['trained_positions']:>11} | "
              f"{r['real_tokens']:>11} | {r['trained_positions'] / r['real_tokens']:>12.1%} | {r['wall_ratio']:>7.2f}")
        if r["lm_head"] == "sparse" and r["dense_fallback_steps"]:
            print(f"  ({r['dense_fallback_steps']} of its steps overflowed the sparse buffer and ran the dense head)")
    print(f"ATLaS {args.ratio:.0%} epoch / all-steps dense-head epoch: {rows[2]['wall_ratio']:.2f} (target <= 0.75)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": jax.devices()[0].device_kind, "shape": args.shape, "batch": args.batch,
                       "seq_len": args.seq_len, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
