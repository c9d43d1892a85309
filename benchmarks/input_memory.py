"""Peak memory of `atlas-jax train` with and without one huge message in the data (issue 12, point 4).

    python -m benchmarks.input_memory [--message-mb 5] [--steps 12] [--out DIR]

Trains the CPU demo's tiny model (configs/tiny_cpu.yaml, plain SFT, no mask) twice, each in its own
process: on the bundled BabyAI sample, then on the same sample plus one trajectory whose observation
is a ``--message-mb`` MB text. Prints each run's peak RSS (the child's ru_maxrss), wall time and the
data summary line the run logged; memory must not depend on the message (the issue saw 5.5 GB).

Measured 2026-11-28 on the shared 2-core CPU machine (load average ~25, so the times say nothing):
sample 1165 MiB peak RSS; sample + one 5 MB message 1173 MiB (+7 MiB; 2 messages cut before tokenizing).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "data", "sample", "babyai_train.jsonl")


def huge_record(megabytes: float) -> dict:
    words = "you see a wall and a red key on the floor. "
    text = words * int(megabytes * 1e6 / len(words))
    return {"item_id": "huge_0", "conversations": [
        {"from": "human", "value": "Go to the red key."},
        {"from": "gpt", "value": "Thought: I look first. Action: look"},
        {"from": "human", "value": f"Observation: {text}"},
        {"from": "gpt", "value": "Thought: the key is near. Action: go to red key"}]}


def train(out_dir: str, files: list[str], tokenizer: str, steps: int) -> tuple[float, float, str]:
    """(peak RSS in MiB, seconds, the run's data summary line) of one training process."""
    overrides = [f"output_dir={out_dir}", f"data.train_files=[{','.join(files)}]", f"data.tokenizer={tokenizer}",
                 "data.mask_file=null", "data.encode.weight_mode=all", f"train.steps={steps}", "train.save_every=0",
                 "eval.files=[]", "train.progress_bar=false"]
    # a fresh interpreter per run whose only job is the training process: its ru_maxrss is that run's peak
    code = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "sys.stdout.write(p.stdout + p.stderr); "
            "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(p.returncode)")
    cmd = [sys.executable, "-c", code, sys.executable, "-m", "atlas_jax.cli", "train", "--config",
           os.path.join(REPO, "configs", "tiny_cpu.yaml"), *overrides]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"})
    seconds = time.time() - start
    if proc.returncode:
        raise SystemExit(f"training failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    rss_kb = int(re.search(r"MAXRSS_KB (\d+)", proc.stdout).group(1))
    summary = next((line for line in proc.stdout.splitlines() if "encoded" in line and "sequences" in line), "")
    return rss_kb / 1024, seconds, summary.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--message-mb", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--out", help="work folder (default: a temporary one)")
    args = parser.parse_args()

    from atlas_jax.data.tiny_tokenizer import build_tiny_tokenizer

    work = args.out or tempfile.mkdtemp(prefix="input-memory-")
    tokenizer = build_tiny_tokenizer(os.path.join(work, "tokenizer"))
    huge = os.path.join(work, "huge.jsonl")
    with open(huge, "w", encoding="utf-8") as f:
        f.write(json.dumps(huge_record(args.message_mb)) + "\n")
    rows = {}
    for name, files in (("sample", [SAMPLE]), (f"sample + one {args.message_mb:g} MB message", [SAMPLE, huge])):
        rows[name] = train(os.path.join(work, name.split()[0] + ("_huge" if len(files) > 1 else "")), files,
                           tokenizer, args.steps)
        rss, seconds, summary = rows[name]
        print(f"{name}: peak RSS {rss:.0f} MiB, {seconds:.0f} s\n  {summary}", flush=True)
    (base, *_), (huge_rss, *_) = rows.values()
    print(f"difference: {huge_rss - base:+.0f} MiB (issue 12 asks for less than 1024 MiB)")


if __name__ == "__main__":
    main()
