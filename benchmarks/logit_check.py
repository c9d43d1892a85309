"""Compare atlas-jax against transformers (PyTorch) on any local Hugging Face checkpoint.

    python benchmarks/logit_check.py --model /path/to/Llama-3.1-8B-Instruct [--text "..."] \
        [--dtype float32|bfloat16] [--seq-len 64] [--batch 2]

Prints, per position, the max |logit difference| and KL(p_transformers || p_atlas), then
a summary; exits 1 when the max difference exceeds --atol (default: 1e-3 in float32, 0.5
in bfloat16). Needs torch (CPU is fine for small models; uses CUDA when available).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="Hugging Face model directory (config.json + safetensors)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: --model); used only with --text")
    p.add_argument("--text", action="append", help="prompt(s) to compare on; default: random token ids")
    p.add_argument("--seq-len", type=int, default=64, help="length of random prompts")
    p.add_argument("--batch", type=int, default=2, help="number of random prompts")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--atol", type=float, help="max allowed |logit difference|")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def token_batch(args, vocab_size: int) -> np.ndarray:
    if not args.text:
        return np.random.RandomState(args.seed).randint(0, vocab_size, (args.batch, args.seq_len)).astype(np.int32)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    encoded = [tok(t)["input_ids"] for t in args.text]
    length = min(map(len, encoded))  # equal lengths: no padding, so both sides see the same tokens
    return np.asarray([ids[:length] for ids in encoded], np.int32)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def compare(reference: np.ndarray, ours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-position max abs difference and KL(reference || ours), each [B, T]."""
    diff = np.abs(reference - ours).max(-1)
    logp, logq = log_softmax(reference.astype(np.float64)), log_softmax(ours.astype(np.float64))
    kl = (np.exp(logp) * (logp - logq)).sum(-1)
    return diff, kl


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax
    import jax.numpy as jnp
    import torch
    from transformers import AutoModelForCausalLM

    from atlas_jax.convert.checkpoint import load_hf

    jax.config.update("jax_default_matmul_precision", "highest")
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    reference_model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch_dtype).to(device).eval()
    ids = token_batch(args, reference_model.config.vocab_size)
    with torch.no_grad():
        reference = reference_model(torch.tensor(ids, dtype=torch.long, device=device)).logits.float().cpu().numpy()
    del reference_model
    ours_model = load_hf(args.model, dtype=args.dtype)
    ours = np.asarray(jax.jit(lambda t: ours_model(t))(jnp.asarray(ids)))

    diff, kl = compare(reference, ours)
    print(f"{'pos':>5} {'max|dlogit|':>12} {'KL(hf||atlas)':>14}")
    for t in range(ids.shape[1]):
        print(f"{t:>5} {diff[:, t].max():>12.3e} {kl[:, t].max():>14.3e}")
    atol = args.atol if args.atol is not None else (1e-3 if args.dtype == "float32" else 0.5)
    agree = (reference.argmax(-1) == ours.argmax(-1)).mean()
    print(f"\nmodel {args.model} dtype {args.dtype} tokens {ids.shape}: max |dlogit| {diff.max():.3e}, "
          f"mean KL {kl.mean():.3e}, max KL {kl.max():.3e}, argmax agreement {agree:.2%}")
    ok = diff.max() <= atol
    print("PASS" if ok else f"FAIL: max |dlogit| above {atol}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
