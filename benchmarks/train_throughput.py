"""Training throughput: atlas-jax vs transformers+PyTorch on the same Llama shape and data, in one run.

    python benchmarks/train_throughput.py                  # GPU present: Llama-3.2-1B shape, bf16, cuDNN attention
    python benchmarks/train_throughput.py --torch-compile  # ... and a torch.compile row (the H100 reference)
    python benchmarks/train_throughput.py --shape tiny     # CPU-friendly tiny shape (the default without a GPU)
    python benchmarks/train_throughput.py --shape ~/.cache/atlas-jax/smollm2-135m-instruct-hf/config.json \
        --batch 4 --seq-len 1024                           # any Hugging Face config.json

Target: on one H100, atlas-jax at least matches torch.compile's ~48k tokens/s on the 1b shape
(hidden 2048, 16 layers, 32/8 heads, MLP 8192, vocab 128256, seq 4096, batch 4).

Both sides train on the same random tokens with half of the positions weighted (loss = Σ w·CE / Σ w),
one device each. atlas-jax runs the library's own train step (chunked weighted CE, AdamW with
global-norm clipping, donated buffers); PyTorch runs LlamaForCausalLM (SDPA attention, float32
parameters, bf16 autocast on CUDA), the same loss from full logits, clipping and AdamW (fused on CUDA).
--remat applies to atlas-jax only. Order: torch first (eager, then torch.compile), each freed before
the next, then atlas-jax; JAX's GPU memory preallocation is turned off (unless set in the environment)
so the torch runs get the whole GPU. Each implementation runs in its own child process. Peak memory is
the allocator's peak on GPU (torch.cuda.max_memory_allocated, JAX peak_bytes_in_use) and the child's
peak resident set size on CPU (ru_maxrss: parameters, optimizer state, activations and the runtime itself). MFU uses the same FLOPs
formula for every row (atlas_jax.train.flops) against the device's dense bf16 peak; "n/a" on CPU.
Steps are timed after --warmup untimed steps, from the first timed dispatch to the last result.
On a busy shared CPU, torch's OpenMP threads can stall each other (tens of times slower): compare
with OMP_NUM_THREADS=1 there.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GiB = 1024 ** 3
SHAPES = {  # model shape (ModelConfig fields) + default batch and sequence length
    "tiny": dict(model=dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                            num_kv_heads=2, head_dim=16), seq_len=256, batch=4),
    "1b": dict(model=dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32,
                          num_kv_heads=8, head_dim=64, rope_theta=500000.0), seq_len=4096, batch=4),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", help=f"{' | '.join(sorted(SHAPES))} | a Hugging Face config.json "
                   "(default: 1b with a GPU, tiny without)")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation)")
    p.add_argument("--batch", type=int, help="rows per step (default: the shape's)")
    p.add_argument("--seq-len", type=int, help="tokens per row (default: the shape's)")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), help="compute dtype (default: bfloat16 on GPU, "
                   "float32 on CPU); parameters and optimizer state stay float32")
    p.add_argument("--attention", choices=("xla", "cudnn"), help="atlas-jax attention (default: cudnn on GPU)")
    p.add_argument("--remat", choices=("none", "full", "save_dots"), default="none")
    p.add_argument("--lm-head", choices=("dense", "sparse"), default="dense",
                   help="atlas-jax LM head (sparse: logits only at weighted positions, half of them here)")
    p.add_argument("--only", choices=("atlas-jax", "torch", "torch.compile"), help=argparse.SUPPRESS)
    p.add_argument("--skip-torch", action="store_true", help="atlas-jax only")
    p.add_argument("--torch-compile", action="store_true", help="also time torch.compile")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    return p.parse_args(argv)


def random_batch(batch: int, seq_len: int, vocab: int, seed: int) -> dict[str, np.ndarray]:
    """Random next-token rows, one sequence per row, exactly half of each row's positions weighted."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, (batch, seq_len + 1), dtype=np.int32)
    weighted = np.argsort(rng.random((batch, seq_len)), axis=1) < seq_len // 2
    return {"input_ids": tokens[:, :-1], "target_ids": tokens[:, 1:],
            "loss_weights": weighted.astype(np.float32), "segment_ids": np.ones((batch, seq_len), np.int32),
            "positions": np.broadcast_to(np.arange(seq_len, dtype=np.int32), (batch, seq_len)).copy()}


def timed(step, warmup: int, steps: int, sync) -> tuple[float, float]:
    """(seconds per step, last loss): ``step()`` returns a loss handle; ``sync(x)`` waits for it."""
    for _ in range(warmup):
        sync(step())
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss = sync(loss)
    return (time.perf_counter() - start) / steps, float(loss)


# --- atlas-jax ----------------------------------------------------------------------------------

def bench_jax(cfg, data, args, optim) -> dict:
    import jax
    import jax.numpy as jnp

    from atlas_jax.model import init_model
    from atlas_jax.sharding import MeshConfig, build_mesh
    from atlas_jax.train.config import TrainSection
    from atlas_jax.train.loss import head_capacity
    from atlas_jax.train.optimizer import make_optimizer
    from atlas_jax.train.step import build_steps

    mesh = build_mesh(MeshConfig(num_devices=1))  # one device, like the torch side
    tx, schedule = make_optimizer(optim, args.warmup + args.steps)
    steps = build_steps(init_model(cfg, args.seed, mesh), tx, schedule, mesh, grad_accum_steps=1,
                        loss_chunk_tokens=TrainSection.loss_chunk_tokens,  # the trainer's default
                        head_capacity=(head_capacity(int(data["loss_weights"].sum(1).max()), args.seq_len)
                                       if args.lm_head == "sparse" else None))
    batch = jax.device_put(data, steps.batch_shardings)
    state = {"params": steps.params, "opt_state": steps.opt_state, "step": 0}

    def step():
        state["params"], state["opt_state"], metrics = steps.train(state["params"], state["opt_state"], batch,
                                                                   jnp.asarray(state["step"], jnp.int32))
        state["step"] += 1
        return metrics["loss"]

    step_s, loss = timed(step, args.warmup, args.steps, jax.block_until_ready)
    stats = mesh.devices.flat[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return {"impl": "atlas-jax", "step_s": step_s, "loss": loss, "peak_bytes": peak}


# --- transformers + PyTorch ------------------------------------------------------------------------

def torch_model(cfg, device):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    hf = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                     num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                     num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
                     max_position_embeddings=cfg.max_position_embeddings, tie_word_embeddings=cfg.tie_word_embeddings,
                     rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta})
    with torch.device(device):
        return AutoModelForCausalLM.from_config(hf, dtype=torch.float32, attn_implementation="sdpa")


def bench_torch(cfg, data, args, optim, device, compile_: bool) -> dict:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(args.seed)
    model = torch_model(cfg, device).train()
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=optim.learning_rate, betas=(optim.b1, optim.b2), eps=optim.eps,
                            weight_decay=optim.weight_decay, fused=cuda)
    ids, targets, weights = (torch.from_numpy(data[k]).to(device) for k in ("input_ids", "target_ids", "loss_weights"))
    ids, targets = ids.long(), targets.long()

    def loss_fn(ids, targets, weights):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16"):
            logits = model(input_ids=ids).logits
        ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
        return (ce * weights.flatten()).sum() / weights.sum()

    forward = torch.compile(loss_fn) if compile_ else loss_fn

    def step():
        loss = forward(ids, targets, weights)
        loss.backward()
        if optim.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), optim.clip_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def sync(loss):
        if cuda:
            torch.cuda.synchronize()
        return loss.item()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    step_s, loss = timed(step, args.warmup, args.steps, sync)
    peak = torch.cuda.max_memory_allocated() if cuda else None
    del model, opt, forward
    if compile_:
        torch._dynamo.reset()  # its caches hold the compiled model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return {"impl": "torch.compile" if compile_ else "torch", "step_s": step_s, "loss": loss, "peak_bytes": peak}


# --- report ---------------------------------------------------------------------------------------

def finish(row: dict, tokens_per_step: int, flops_per_token: float, peak_flops: float | None) -> dict:
    row["tokens_per_sec"] = tokens_per_step / row["step_s"]
    row["mfu"] = row["tokens_per_sec"] * flops_per_token / peak_flops if peak_flops else None
    row["peak_mem_gib"] = row.pop("peak_bytes") / GiB if row["peak_bytes"] is not None else None
    return row


def table(rows: list[dict]) -> str:
    def fmt(value, spec):
        return "n/a" if value is None else format(value, spec)
    lines = [f"{'impl':<14} | {'tokens/s':>10} | {'step ms':>9} | {'peak mem GiB':>12} | {'MFU':>6}"]
    lines.append("-" * len(lines[0]))
    for r in rows:
        lines.append(f"{r['impl']:<14} | {r['tokens_per_sec']:>10.0f} | {r['step_s'] * 1e3:>9.1f} | "
                     f"{fmt(r['peak_mem_gib'], '.2f'):>12} | {fmt(r['mfu'], '.1%'):>6}")
    return "\n".join(lines)


def model_config(args, gpu: bool):
    from atlas_jax.model import ModelConfig

    common = dict(dtype=args.dtype, attention=args.attention, remat=args.remat)
    if args.shape in SHAPES:
        shape = SHAPES[args.shape]
        args.batch, args.seq_len = args.batch or shape["batch"], args.seq_len or shape["seq_len"]
        return ModelConfig(model_type="llama", **shape["model"], tie_word_embeddings=True,
                           max_position_embeddings=max(args.seq_len, 8192), **common)
    if not os.path.isfile(args.shape):
        raise SystemExit(f"--shape {args.shape}: neither {', '.join(sorted(SHAPES))} nor a config.json file")
    with open(args.shape) as f:
        hf = json.load(f)
    args.batch, args.seq_len = args.batch or 4, args.seq_len or 1024
    hf["max_position_embeddings"] = max(hf.get("max_position_embeddings", 0), args.seq_len)
    return ModelConfig.from_hf_dict(hf, source=args.shape, **common)


def peak_rss_bytes() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def run_one(args, gpu: bool) -> dict:
    """One implementation, in this (child) process."""
    from atlas_jax.train.config import OptimSection

    cfg = model_config(args, gpu)
    optim = OptimSection()
    data = random_batch(args.batch, args.seq_len, cfg.vocab_size, args.seed)
    if args.only == "atlas-jax":
        row = bench_jax(cfg, data, args, optim)
    else:
        import torch
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        row = bench_torch(cfg, data, args, optim, device, compile_=args.only == "torch.compile")
    if not gpu:
        row["peak_bytes"] = peak_rss_bytes()
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before JAX's GPU backend starts
    import jax

    from atlas_jax.train.flops import peak_flops, train_flops_per_token

    gpu = jax.default_backend() == "gpu"
    args.shape = args.shape or ("1b" if gpu else "tiny")
    args.dtype = args.dtype or ("bfloat16" if gpu else "float32")
    args.attention = args.attention or ("cudnn" if gpu and args.dtype == "bfloat16" else "xla")
    if args.only:  # a child: print one JSON row
        print("ROW " + json.dumps(run_one(args, gpu)))
        return 0
    cfg = model_config(args, gpu)
    flops_per_token, peak = train_flops_per_token(cfg, args.seq_len), peak_flops()
    where = f"{jax.devices()[0].device_kind} (jax {jax.__version__}, {jax.default_backend()})"
    impls = ["atlas-jax"] + ([] if args.skip_torch else ["torch"] + (["torch.compile"] if args.torch_compile else []))
    rows = []
    for impl in impls:  # one child process each: clean memory peaks, nothing shared between runs
        argv_child = [sys.executable, os.path.abspath(__file__), *(argv if argv is not None else sys.argv[1:]),
                      "--only", impl, "--shape", args.shape, "--batch", str(args.batch), "--seq-len",
                      str(args.seq_len)]
        proc = subprocess.run(argv_child, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("ROW ")]
        if proc.returncode or not lines:
            raise SystemExit(f"{impl} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        rows.append(json.loads(lines[-1][4:]))
    if not args.skip_torch:
        import torch
        where += f"; torch {torch.__version__} on {'cuda' if torch.cuda.is_available() else 'cpu'}"
    rows = [finish(r, args.batch * args.seq_len, flops_per_token, peak) for r in rows]
    ratios = {r["impl"]: rows[0]["tokens_per_sec"] / r["tokens_per_sec"] for r in rows[1:]}
    mem_ratios = {r["impl"]: rows[0]["peak_mem_gib"] / r["peak_mem_gib"] for r in rows[1:]
                  if r["peak_mem_gib"] and rows[0]["peak_mem_gib"]}

    print(f"device: {where}")
    print(f"shape {args.shape}: hidden {cfg.hidden_size}, {cfg.num_layers} layers, {cfg.num_heads}/{cfg.num_kv_heads} "
          f"heads, MLP {cfg.intermediate_size}, vocab {cfg.vocab_size}; batch {args.batch} x seq {args.seq_len}; "
          f"{args.dtype}, atlas-jax attention {args.attention}, remat {args.remat}, LM head {args.lm_head}; "
          f"{args.steps} timed steps after {args.warmup} warm-up; peak memory: "
          f"{'allocator peak' if gpu else 'peak RSS of each child process'}")
    print(table(rows))
    for impl, ratio in ratios.items():
        print(f"ratio atlas-jax / {impl}: speed {ratio:.2f}"
              + (f", peak memory {mem_ratios[impl]:.2f}" if impl in mem_ratios else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": where, "shape": args.shape, "model": dataclasses.asdict(cfg),
                       "batch": args.batch, "seq_len": args.seq_len, "steps": args.steps, "warmup": args.warmup,
                       "lm_head": args.lm_head, "train_flops_per_token": flops_per_token, "peak_flops": peak,
                       "rows": rows, "speed_ratios": ratios, "memory_ratios": mem_ratios}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
