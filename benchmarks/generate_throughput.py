"""Generation throughput (new tokens / s) of atlas-jax's KV-cached ``generate`` vs transformers.

    python benchmarks/generate_throughput.py [--model HF_DIR] [--batch 8] [--prompt-len 512] \
        [--new-tokens 128] [--dtype float32|bfloat16] [--repeats 3] [--no-torch]

Without --model, a tiny random Llama (2 layers, hidden 64, vocab 512) is built. Prompts are
random ids and no stop token is used, so every row generates exactly --new-tokens; the first
JAX call (compilation) is timed separately from the steady-state calls.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="Hugging Face model directory (default: a tiny random Llama)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-torch", action="store_true", help="skip the transformers baseline")
    return p.parse_args(argv)


def tiny_model_dir() -> str:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tempfile.mkdtemp(prefix="gen_bench_")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                                 initializer_range=0.3)).save_pretrained(path)
    return path


def bench_jax(model_dir, prompts, args) -> tuple[float, float]:
    from atlas_jax.convert.checkpoint import load_hf
    from atlas_jax.model.generate import generate

    model = load_hf(model_dir, dtype=args.dtype)
    began = time.perf_counter()
    first = generate(model, prompts, [], max_new_tokens=args.new_tokens, prompt_bucket=args.prompt_len)
    compile_s = time.perf_counter() - began
    assert first.num_tokens == args.batch * args.new_tokens
    times = []
    for _ in range(args.repeats):
        began = time.perf_counter()
        generate(model, prompts, [], max_new_tokens=args.new_tokens, prompt_bucket=args.prompt_len)
        times.append(time.perf_counter() - began)
    return compile_s, min(times)


def bench_torch(model_dir, prompts, args) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.float32 if args.dtype == "float32" else torch.bfloat16
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    ids = torch.tensor(prompts, device=device)
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=args.new_tokens,
                  min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)
    times = []
    with torch.no_grad():
        model.generate(ids, **kwargs)  # warm-up
        for _ in range(args.repeats):
            began = time.perf_counter()
            model.generate(ids, **kwargs)
            times.append(time.perf_counter() - began)
    return min(times)


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax

    model_dir = args.model or tiny_model_dir()
    from atlas_jax.model import ModelConfig

    vocab = ModelConfig.from_hf_dir(model_dir).vocab_size
    prompts = np.random.RandomState(0).randint(5, vocab, (args.batch, args.prompt_len)).tolist()
    tokens = args.batch * args.new_tokens
    print(f"device {jax.devices()[0].platform}, batch {args.batch}, prompt {args.prompt_len}, "
          f"new tokens {args.new_tokens}, {args.dtype}")
    compile_s, best = bench_jax(model_dir, prompts, args)
    print(f"atlas-jax:    {tokens / best:10.1f} tokens/s  ({best:.3f} s per call; first call incl. compile "
          f"{compile_s:.2f} s)")
    if not args.no_torch:
        best_torch = bench_torch(model_dir, prompts, args)
        print(f"transformers: {tokens / best_torch:10.1f} tokens/s  ({best_torch:.3f} s per call)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
