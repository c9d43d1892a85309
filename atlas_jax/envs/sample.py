"""Build the bundled expert sample under data/sample (the demo's and the tests' default data).

    python -m atlas_jax.envs.sample            # rewrites data/sample/*, bit-for-bit the same

Every part is deterministic: fixed task indices per split, experts without randomness (their
one recoverable mistake per ``experts.MISTAKE_PERIOD`` episodes is chosen by task index),
TextCraft's command lists made hash-seed independent, JSON written in insertion order.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

# file stem -> (environment, split, task indices attempted). BabyAI and TextCraft are the
# training data; SciWorld comes from its eval split and stays held out.
SAMPLE: dict[str, tuple[str, str, int]] = {
    "babyai_train": ("babyai", "train", 40),
    "textcraft_train": ("textcraft", "train", 30),
    "sciworld_heldout": ("sciworld", "eval", 23),  # one variation of each of the 23 tasks
}
DEFAULT_OUT = os.path.join("data", "sample")


def build(out_dir: str, stems: list[str]) -> dict:
    from atlas_jax.envs.experts import ExpertReport, generate
    from atlas_jax.envs.experts_cmd import write_jsonl
    from atlas_jax.envs.registry import make_env

    manifest = {}
    for stem in stems:
        env_name, split, attempts = SAMPLE[stem]
        env = make_env(env_name)
        try:
            report = ExpertReport(env_name)
            path = os.path.join(out_dir, f"{stem}.jsonl")
            write_jsonl(path, generate(env, env.task_indices(split, attempts), report))
        finally:
            env.close()
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        manifest[stem] = {"env": env_name, "split": split, "attempted": report.attempted, "kept": report.kept,
                          "recovered": report.recovered, "dropped": dict(sorted(report.dropped.items())), "sha256": digest}
        print("\n".join(report.lines()), file=sys.stderr)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--only", nargs="*", choices=sorted(SAMPLE), default=sorted(SAMPLE),
                        help="build only these files (the manifest is then not rewritten)")
    args = parser.parse_args(argv)
    manifest = build(args.out, args.only)
    if sorted(args.only) == sorted(SAMPLE):
        with open(os.path.join(args.out, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump({"command": "python -m atlas_jax.envs.sample", "files": manifest}, f, indent=2)
            f.write("\n")
    for stem, entry in manifest.items():
        print(f"{stem}.jsonl  kept {entry['kept']}/{entry['attempted']}  sha256 {entry['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
