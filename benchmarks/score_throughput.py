"""Scoring-pass throughput: atlas-jax vs transformers+PyTorch on the same model shape and data, in one run.

    python benchmarks/score_throughput.py                 # tiny Llama shape on CPU (float32)
    python benchmarks/score_throughput.py --shape 1b      # Llama-3.2-1B shape, bf16, on a GPU
    python benchmarks/score_throughput.py --sharing       # 30-step trajectories: variants alone vs prefix-shared

Both sides get the same random-weight model (built with transformers, saved, loaded by atlas-jax)
and the same synthetic sequences (random token ids, 8 "steps" per sequence). atlas-jax runs its
scoring pass (packed rows, jitted forward, per-token NLL + entropy, per-step segment sums on
device); PyTorch runs the usual reference: length-sorted padded batches, forward, float32
log-softmax and per-token log-probabilities gathered on the targets. Each side gets one untimed
warm-up batch (compilation), then the timed pass over all data. Tokens/s counts real tokens only.

``--sharing`` instead scores whole trajectories (``--steps`` steps each, AgentGym layout, the tiny
test tokenizer) with all three variants, packed two ways: every counterfactual sequence alone
(O(steps x tokens), the scoring pass before prefix sharing) and prefix-shared trees (O(tokens)).
Both run the same jitted step, compiled for each batch shape first, over every batch, timed; it prints tokens run through the model, rows, wall time, and the largest difference of
the per-step NLL sums between the two (they must agree).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPES = {
    "tiny": dict(vocab_size=2048, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    # Llama 3.2 1B
    "1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True,
               rope_theta=500000.0),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--sequences", type=int, help="number of sequences (default: 64 tiny, 256 1b)")
    p.add_argument("--seq-len", type=int, help="row length (default: 256 tiny, 2048 1b and --sharing)")
    p.add_argument("--batch-size", type=int, help="rows per batch (default: 8; --sharing 1)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), help="compute dtype (default: float32 on CPU, "
                   "bfloat16 on GPU)")
    p.add_argument("--attention", choices=("xla", "cudnn"), help="atlas-jax attention (default: cudnn on GPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sharing", action="store_true", help="trajectories: variants alone vs prefix-shared")
    p.add_argument("--steps", type=int, default=30, help="--sharing: steps per trajectory (default 30)")
    p.add_argument("--trajectories", type=int, default=2, help="--sharing: trajectories (default 2)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    return p.parse_args(argv)


def synthetic_sequences(n: int, seq_len: int, vocab: int, seed: int):
    """Random-length sequences (seq_len/4 .. seq_len) whose tokens are split into 8 alternating step spans."""
    from atlas_jax.selection.variants import ScoreSequence

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(seq_len // 4, seq_len + 1))
        ids_L = rng.integers(0, vocab, length).astype(np.int32)
        bounds = np.linspace(0, length, 17).astype(int)
        steps_L = np.full(length, -1, np.int32)
        for k in range(8):  # odd sixteenths are steps, even ones context
            steps_L[bounds[2 * k + 1]:bounds[2 * k + 2]] = k
        steps_L[0] = -1
        out.append(ScoreSequence(f"s{i}", "full", ids_L, steps_L))
    return out


def bench_jax(model, sequences, seq_len, batch_size) -> tuple[float, int]:
    import jax

    from atlas_jax.selection.packing import batches, pack
    from atlas_jax.selection.scoring import make_score_step

    rows, report = pack(sequences, seq_len, num_slots=16)
    step = make_score_step(model, num_slots=16, chunk=min(256, seq_len))
    all_batches = [b for b, _ in batches(rows, sequences, seq_len, batch_size)]
    jax.block_until_ready(step(all_batches[0]))  # compile
    start = time.perf_counter()
    outs = [step(b) for b in all_batches]
    jax.block_until_ready(outs)
    return time.perf_counter() - start, report.tokens


WORDS = ("the red key door table north room look pick up open move forward turn left right box ball green "
         "blue wall step drop toggle you see a closed locked kitchen go to then").split()


def agent_trajectories(n: int, steps: int, seed: int):
    """AgentGym-layout trajectories: instruction, acknowledgement, goal, then step/observation turns."""
    from atlas_jax.data.trajectory import parse_record

    rng = np.random.default_rng(seed)

    def text(words):
        return " ".join(rng.choice(WORDS, words))

    out = []
    for i in range(n):
        conv = [{"from": "human", "value": f"You are an agent. {text(40)}."},
                {"from": "gpt", "value": "OK. I'll follow your instructions and try my best to solve the task.",
                 "loss": False},
                {"from": "human", "value": f"Your goal: {text(12)}."}]
        for k in range(steps):
            conv.append({"from": "gpt", "value": f"Thought: {text(4)}. Action: {text(2)}"})
            if k < steps - 1:
                conv.append({"from": "human", "value": f"Observation: {text(6)}."})
        out.append(parse_record({"item_id": f"traj_{i}", "conversations": conv}, f"synthetic:{i}"))
    return out


def bench_sharing(model, trajectories, seq_len: int, batch_size: int) -> list[dict]:
    """Both packings of the same score sequences through the same step; see the module docstring."""
    import tempfile

    import jax

    from atlas_jax.data.tiny_tokenizer import build_tiny_tokenizer
    from atlas_jax.selection.packing import batches, pack
    from atlas_jax.selection.scoring import SLOT_SUMS, make_score_step, scored_capacity
    from atlas_jax.selection.variants import trajectory_sequences
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = AutoTokenizer.from_pretrained(build_tiny_tokenizer(tmp))
    start = time.perf_counter()
    sequences = [seq for t in trajectories for seq in trajectory_sequences(t, tokenizer)]
    encode_s = time.perf_counter() - start
    num_slots = 1 << (3 * max(t.num_steps for t in trajectories)).bit_length()
    step = make_score_step(model, num_slots, chunk=min(256, seq_len))
    results, sums = [], {}
    for share in (False, True):
        start = time.perf_counter()
        rows, report = pack(sequences, seq_len, num_slots, share_prefixes=share)
        assert report.truncated_sequences == 0, f"raise --seq-len: {report.truncated_sequences} sequences cut"
        all_batches = list(batches(rows, sequences, seq_len, batch_size))
        host_s = time.perf_counter() - start
        shapes = {(scored_capacity(b["slot_ids"]), bool(b["prefix_lengths"].any())): b for b, _ in all_batches}
        jax.block_until_ready([step(b) for b in shapes.values()])  # compile every shape once
        start = time.perf_counter()
        outs = [step(b) for b, _ in all_batches]
        jax.block_until_ready(outs)
        device_s = time.perf_counter() - start
        got = {}
        for out, (_, chunk_rows) in zip(outs, all_batches):
            nll_BxS = np.asarray(out[SLOT_SUMS[1]])
            for b, row in enumerate(chunk_rows):
                for i, _, slots in row.parts:
                    got.update({(i, s): float(nll_BxS[b, slot]) for slot, s in slots})
        sums[share] = got
        results.append({"impl": "prefix-shared" if share else "variants alone", "rows": len(rows),
                        "batches": len(all_batches), "tokens": report.tokens,
                        "padded_tokens": len(all_batches) * batch_size * seq_len, "seconds": device_s,
                        "host_pack_seconds": host_s, "encode_seconds": encode_s})
    assert sums[False].keys() == sums[True].keys()
    diff = max(abs(sums[False][k] - sums[True][k]) / max(1.0, abs(sums[False][k])) for k in sums[False])
    for r in results:
        r["max_rel_nll_sum_diff"] = diff
    return results


def bench_torch(model, sequences, batch_size, device) -> tuple[float, int]:
    import torch

    order = sorted(sequences, key=lambda s: len(s.token_ids_L))
    groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

    def run(group):
        width = max(len(s.token_ids_L) for s in group)
        ids = torch.zeros(len(group), width, dtype=torch.long)
        mask = torch.zeros(len(group), width, dtype=torch.long)
        for r, s in enumerate(group):
            ids[r, :len(s.token_ids_L)] = torch.from_numpy(s.token_ids_L.astype(np.int64))
            mask[r, :len(s.token_ids_L)] = 1
        ids, mask = ids.to(device), mask.to(device)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            token_logp = logp.gather(-1, ids[:, 1:, None])[..., 0] * mask[:, 1:]
        return token_logp.sum().item()  # forces the computation

    run(groups[-1])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for g in groups:
        run(g)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, sum(len(s.token_ids_L) for s in sequences)


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from atlas_jax.convert.checkpoint import load_pretrained

    gpu = jax.default_backend() == "gpu"
    tiny = args.shape == "tiny"
    dtype = args.dtype or ("bfloat16" if gpu else "float32")
    seq_len = args.seq_len or (2048 if args.sharing or not tiny else 256)
    n = args.sequences or (64 if tiny else 256)
    batch_size = args.batch_size or (1 if args.sharing else 8)
    attention = args.attention or ("cudnn" if gpu and dtype == "bfloat16" else "xla")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = getattr(torch, dtype)

    config = AutoConfig.for_model("llama", max_position_embeddings=max(seq_len, 8192), **SHAPES[args.shape])
    torch.manual_seed(args.seed)
    hf = AutoModelForCausalLM.from_config(config, dtype=torch_dtype, attn_implementation="sdpa").eval()
    sequences = synthetic_sequences(n, seq_len, config.vocab_size, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        model = load_pretrained(tmp, dtype=dtype, attention=attention)
    if args.sharing:
        return report_sharing(args, model, seq_len, batch_size, dtype, attention)
    hf = hf.to(device)

    jax_s, jax_tokens = bench_jax(model, sequences, seq_len, batch_size)
    del model
    torch_s, torch_tokens = bench_torch(hf, sequences, batch_size, device)
    assert jax_tokens == torch_tokens, (jax_tokens, torch_tokens)
    jax_tps, torch_tps = jax_tokens / jax_s, torch_tokens / torch_s
    print(f"shape {args.shape} ({sum(p.numel() for p in hf.parameters()) / 1e6:.1f}M params), {dtype}, "
          f"{n} sequences / {jax_tokens} tokens, rows of {seq_len}, batch {batch_size}")
    print(f"devices: jax {jax.devices()[0].device_kind} x{jax.device_count()} ({attention} attention), "
          f"torch {device} ({torch.__version__}, sdpa)")
    print(f"atlas-jax scoring pass (nll + entropy + per-step sums): {jax_tps:12.0f} tokens/s  ({jax_s:.3f} s)")
    print(f"transformers forward + per-token log-probs:             {torch_tps:12.0f} tokens/s  ({torch_s:.3f} s)")
    print(f"ratio atlas-jax / transformers: {jax_tps / torch_tps:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": jax.devices()[0].device_kind, "shape": args.shape, "dtype": dtype,
                       "rows": [{"impl": "atlas-jax", "tokens_per_sec": jax_tps, "seconds": jax_s},
                                {"impl": "transformers", "tokens_per_sec": torch_tps, "seconds": torch_s}]}, f, indent=2)
    return 0


def report_sharing(args, model, seq_len, batch_size, dtype, attention) -> int:
    import jax

    trajectories = agent_trajectories(args.trajectories, args.steps, args.seed)
    results = bench_sharing(model, trajectories, seq_len, batch_size)
    alone, shared = results
    print(f"shape {args.shape}, {dtype}, {jax.devices()[0].device_kind} ({attention} attention); "
          f"{args.trajectories} trajectories of {args.steps} steps, all variants; rows of {seq_len}, batch {batch_size}; "
          f"encoding {alone['encode_seconds']:.2f} s (host, once)")
    print(f"{'':16} {'tokens run':>10} {'rows':>5} {'padded':>8} {'host pack s':>11} {'device s':>9}")
    for r in results:
        print(f"{r['impl']:16} {r['tokens']:10d} {r['rows']:5d} {r['padded_tokens']:8d} "
              f"{r['host_pack_seconds']:11.3f} {r['seconds']:9.3f}")
    print(f"prefix-shared / alone: tokens {shared['tokens'] / alone['tokens']:.3f}, "
          f"device time {shared['seconds'] / alone['seconds']:.3f}; "
          f"max relative difference of per-step NLL sums {alone['max_rel_nll_sum_diff']:.1e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": jax.devices()[0].device_kind, "shape": args.shape, "dtype": dtype,
                       "steps": args.steps, "trajectories": args.trajectories, "seq_len": seq_len,
                       "rows": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
