"""Packed-batch attention parity: every kernel this platform offers against the XLA reference.

    python benchmarks/attention_parity.py     # GPU: cudnn, pallas_gpu (bf16) vs xla; TPU: splash;
                                              # CPU: jax.nn's xla path, splash and pallas_gpu interpreted

Rows hold 1-4 packed sequences and trailing padding (segment ids 1..k, 0 = padding), grouped-query
heads, with and without a sliding window. The reference is atlas-jax's blockwise XLA attention in
float32 on the same (rounded) inputs. Per kernel: the output's max |error| on real tokens, the
gradients' (d q, k, v of a loss on real tokens) max |error| relative to the largest reference
gradient, and forward and forward+backward times. Also prints what ``model.attention=auto``
picks for each case. Exit code 1 when a kernel misses its dtype's tolerance.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# what runs where: GPU/TPU kernels on their hardware; on CPU the same code paths (Pallas interpreted)
PLATFORM_KERNELS = {"gpu": ("cudnn", "pallas_gpu"), "tpu": ("splash",), "cpu": ("cudnn-as-xla", "splash", "pallas_gpu")}
WINDOWLESS = ("pallas_gpu",)  # kernels without a sliding window


def packed_rows(batch: int, seq_len: int, seed: int):
    """Segment ids and positions of rows packed with 1..4 sequences of random lengths, then padding."""
    rng = np.random.default_rng(seed)
    segments = np.zeros((batch, seq_len), np.int32)
    positions = np.zeros((batch, seq_len), np.int32)
    for r in range(batch):
        cuts = np.sort(rng.choice(np.arange(1, seq_len), size=int(rng.integers(1, 5)), replace=False))
        start = 0
        for s, end in enumerate(cuts, start=1):
            segments[r, start:end] = s
            positions[r, start:end] = np.arange(end - start)
            start = end
    return segments, positions


def timed(fn, *args, repeats: int) -> tuple[object, float]:
    import jax
    out = jax.block_until_ready(fn(*args))  # compile
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn(*args))
    return out, (time.perf_counter() - start) / repeats * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq-len", type=int, help="default: 4096 on GPU/TPU, 256 on CPU")
    p.add_argument("--heads", type=int, help="default: 32 on GPU/TPU, 4 on CPU")
    p.add_argument("--kv-heads", type=int, help="default: 8 on GPU/TPU, 2 on CPU")
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)
    import jax
    import jax.numpy as jnp

    from atlas_jax.model.attention import attention_mask, blockwise_attention, causal_attention, fused_attention
    from atlas_jax.model.attention_auto import choose_attention

    platform = jax.default_backend()
    accel = platform != "cpu"
    t = args.seq_len or (4096 if accel else 256)
    heads, kv_heads = args.heads or (32 if accel else 4), args.kv_heads or (8 if accel else 2)
    dtype = jnp.bfloat16 if accel else jnp.float32
    out_tol, grad_tol = (2e-2, 2e-2) if dtype == jnp.bfloat16 else (1e-5, 1e-4)
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((args.batch, t, heads, args.head_dim)), dtype)
    k, v = (jnp.asarray(rng.standard_normal((args.batch, t, kv_heads, args.head_dim)), dtype) for _ in "kv")
    segments, positions = (jnp.asarray(x) for x in packed_rows(args.batch, t, 1))
    real = np.asarray(segments > 0)  # padding attends only to padding: compare and train on real tokens
    cotangent = jnp.asarray(rng.standard_normal(q.shape) * real[:, :, None, None], jnp.float32)
    results, failed = [], False
    for window in (None, t // 8):
        def attend(q, k, v, name, window=window):
            if name == "reference":
                return blockwise_attention(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32),
                                           positions, segments, window)
            if name == "cudnn-as-xla":  # the cudnn code path, run by jax.nn's XLA implementation
                mask = attention_mask(positions, positions, segments, segments, window)
                return fused_attention(q, k, v, mask, "xla")
            return causal_attention(q, k, v, positions_BxT=positions, segment_ids_BxT=segments,
                                    sliding_window=window, implementation=name)

        def loss(q, k, v, name):
            return jnp.sum(attend(q, k, v, name).astype(jnp.float32) * cotangent)

        forward = {n: jax.jit(lambda q, k, v, n=n: attend(q, k, v, n)) for n in ("reference",)}
        ref = np.asarray(forward["reference"](q, k, v), np.float32)
        ref_grads = [np.asarray(g, np.float32) for g in
                     jax.jit(jax.grad(lambda q, k, v: loss(q, k, v, "reference"), argnums=(0, 1, 2)))(q, k, v)]
        auto = choose_attention(platform, packed=True, sliding_window=window, dtype=dtype, seq_len=t)
        for name in ("xla",) + PLATFORM_KERNELS.get(platform, ()):
            if window is not None and name in WINDOWLESS:
                continue
            out, fwd_ms = timed(jax.jit(lambda q, k, v, n=name: attend(q, k, v, n)), q, k, v, repeats=args.repeats)
            grads, step_ms = timed(jax.jit(jax.grad(lambda q, k, v, n=name: loss(q, k, v, n), argnums=(0, 1, 2))),
                                   q, k, v, repeats=args.repeats)
            err = float(np.abs(np.asarray(out, np.float32) - ref)[real].max())
            grad_err = max(float(np.abs(np.asarray(g, np.float32) - r).max() / np.abs(r).max())
                           for g, r in zip(grads, ref_grads))
            ok = err <= out_tol and grad_err <= grad_tol
            failed |= not ok
            results.append({"kernel": name, "window": window, "auto": name == auto, "max_abs_err": err,
                            "grad_rel_err": grad_err, "fwd_ms": fwd_ms, "fwd_bwd_ms": step_ms, "ok": ok})
    interpreted = "" if accel else " (splash and pallas_gpu in Pallas interpret mode: times mean nothing)"
    print(f"attention parity on {jax.devices()[0].device_kind}: batch {args.batch} x {t}, {heads}/{kv_heads} "
          f"heads of {args.head_dim}, {jnp.dtype(dtype).name}, packed rows (1-4 sequences + padding){interpreted}")
    print(f"{'kernel':<13} | {'window':>6} | {'max |err|':>9} | {'grad err':>9} | {'fwd ms':>8} | "
          f"{'fwd+bwd ms':>10} | ok  | auto")
    for r in results:
        print(f"{r['kernel']:<13} | {str(r['window']):>6} | {r['max_abs_err']:>9.2e} | {r['grad_rel_err']:>9.2e} | "
              f"{r['fwd_ms']:>8.2f} | {r['fwd_bwd_ms']:>10.2f} | {'yes' if r['ok'] else 'NO ':<3} | "
              f"{'<- auto' if r['auto'] else ''}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": jax.devices()[0].device_kind, "platform": platform, "seq_len": t,
                       "dtype": jnp.dtype(dtype).name, "rows": results}, f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
