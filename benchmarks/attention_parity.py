"""Packed-batch attention parity: every kernel this platform offers against the XLA reference.

    python benchmarks/attention_parity.py            # GPU: cudnn (bf16) vs xla; CPU: jax.nn's xla path vs ours

Rows hold several packed sequences and trailing padding (segment ids 1..k, 0 = padding), with
and without a sliding window. The reference is atlas-jax's blockwise XLA attention in float32 on
the same (bf16-rounded) inputs; each kernel's output and forward time are printed. Exit code 1
when a kernel differs from the reference by more than its dtype's tolerance.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq-len", type=int, help="default: 4096 on GPU, 256 on CPU")
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)
    import jax
    import jax.numpy as jnp

    from atlas_jax.model.attention import blockwise_attention, causal_attention

    gpu = jax.default_backend() == "gpu"
    t = args.seq_len or (4096 if gpu else 256)
    dtype = jnp.bfloat16 if gpu else jnp.float32
    kernels = ["cudnn"] if gpu else ["jax.nn xla"]  # on CPU: the cuDNN code path run by jax.nn's XLA implementation
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((args.batch, t, args.heads, args.head_dim)), dtype)
    k, v = (jnp.asarray(rng.standard_normal((args.batch, t, args.kv_heads, args.head_dim)), dtype) for _ in "kv")
    segments, positions = (jnp.asarray(x) for x in packed_rows(args.batch, t, 1))
    tolerance = 2e-2 if dtype == jnp.bfloat16 else 1e-5
    results, failed = [], False
    for window in (None, t // 8):
        reference = jax.jit(lambda q, k, v: blockwise_attention(
            q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), positions, segments, window))
        ref = np.asarray(reference(q, k, v), np.float32)
        for name in ["xla"] + kernels:
            impl = "xla" if name == "xla" else ("cudnn" if gpu else "fused-xla")

            def run(q, k, v, impl=impl):
                if impl == "fused-xla":
                    from atlas_jax.model.attention import attention_mask, fused_attention
                    mask = attention_mask(positions, positions, segments, segments, window)
                    return fused_attention(q, k, v, mask, "xla")
                return causal_attention(q, k, v, positions_BxT=positions, segment_ids_BxT=segments,
                                        sliding_window=window, implementation=impl)

            fn = jax.jit(run)
            out = np.asarray(jax.block_until_ready(fn(q, k, v)), np.float32)
            start = time.perf_counter()
            for _ in range(5):
                jax.block_until_ready(fn(q, k, v))
            ms = (time.perf_counter() - start) / 5 * 1e3
            real = np.asarray(segments > 0)  # padding rows attend only to padding: compare real tokens
            err = float(np.abs(out - ref)[real].max())
            ok = err <= tolerance
            failed |= not ok
            results.append({"kernel": name, "window": window, "max_abs_err": err, "fwd_ms": ms, "ok": ok})
    print(f"attention parity on {jax.devices()[0].device_kind}: batch {args.batch} x {t}, {args.heads}/{args.kv_heads} "
          f"heads of {args.head_dim}, {jnp.dtype(dtype).name}, packed rows (1-4 sequences + padding)")
    print(f"{'kernel':<12} | {'window':>6} | {'max |err|':>10} | {'fwd ms':>8} | ok")
    for r in results:
        print(f"{r['kernel']:<12} | {str(r['window']):>6} | {r['max_abs_err']:>10.2e} | {r['fwd_ms']:>8.2f} | "
              f"{'yes' if r['ok'] else 'NO'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": jax.devices()[0].device_kind, "seq_len": t, "rows": results}, f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
