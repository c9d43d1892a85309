"""Host-side cost of the scoring pass's sequences: atlas-jax's encoding vs tokenizing every counterfactual whole.

    python benchmarks/score_host.py                                  # the bundled sample, tiny unmarked tokenizer
    python benchmarks/score_host.py --tokenizer HF_DIR               # e.g. SmolLM2's tokenizer (its real template)

The scoring pass runs, per trajectory, its full conversation and two counterfactuals per step
(selection/variants.py). A counterfactual is the conversation up to its step, rewritten near the
end, so tokenizing each one whole (what transformers' ``apply_chat_template(..., tokenize=True)``
does, the reference here) tokenizes O(steps x tokens) per trajectory. atlas-jax tokenizes only
what follows the last chat-template token a counterfactual shares with the full conversation
(data/shared_tokens.py). Both sides produce the same token ids (checked). Printed: sequences,
tokens in them, characters handed to the tokenizer, wall seconds, and the ratio.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = [os.path.join(REPO, "data/sample", f) for f in ("babyai_train.jsonl", "textcraft_train.jsonl",
                                                          "sciworld_heldout.jsonl")]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", help="HF tokenizer directory (default: the tiny tokenizer without generation "
                                       "markers, built here)")
    p.add_argument("--data", nargs="+", default=SAMPLE)
    p.add_argument("--repeat", type=int, default=3, help="timed passes per side; the fastest is printed")
    args = p.parse_args(argv)

    from transformers import AutoTokenizer

    from atlas_jax.data import shared_tokens, spans
    from atlas_jax.data.trajectory import read_trajectories
    from atlas_jax.selection import variants

    tmp = tempfile.mkdtemp()
    if args.tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        from atlas_jax.data.tiny_tokenizer import build_tiny_tokenizer
        tokenizer = AutoTokenizer.from_pretrained(build_tiny_tokenizer(tmp, generation_markers=False))
    trajectories, _ = read_trajectories(args.data)
    steps = sum(t.num_steps for t in trajectories)

    counted = {"chars": 0}
    plain_tokenize = shared_tokens.tokenize

    def counting(tok, text):
        counted["chars"] += len(text)
        return plain_tokenize(tok, text)

    def conversations(traj):  # the reference's inputs: every sequence the pass runs, as messages
        yield traj.messages()
        for k in traj.trainable_steps:
            yield variants.prompt_only_messages(traj, k)
            if variants.has_observation(traj, k):
                yield variants.no_obs_messages(traj, k)

    def reference():
        out = []
        for traj in trajectories:
            for messages in conversations(traj):
                text = tokenizer.apply_chat_template(messages, tokenize=False)
                counted["chars"] += len(text)
                out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
        return out

    def ours():
        return [s.token_ids_L.tolist() for t in trajectories for s in variants.trajectory_sequences(t, tokenizer)]

    rows = {}
    # both modules call it: spans for each full conversation, shared_tokens for the counterfactuals' tails
    shared_tokens.tokenize = spans.tokenize = counting
    try:
        for name, run in (("tokenize every sequence whole (transformers)", reference),
                          ("atlas-jax (shared beginnings reused)", ours)):
            best = None
            for _ in range(args.repeat):
                counted["chars"] = 0
                start = time.perf_counter()
                ids = run()
                seconds = time.perf_counter() - start
                best = seconds if best is None else min(best, seconds)
            rows[name] = (ids, counted["chars"], best)
    finally:
        shared_tokens.tokenize = spans.tokenize = plain_tokenize
    (ref_ids, *_), (our_ids, *_) = rows.values()
    same = ref_ids == our_ids
    print(f"{len(trajectories)} trajectories, {steps} steps, {len(ref_ids)} sequences, "
          f"{sum(map(len, ref_ids))} tokens; tokenizer {type(tokenizer).__name__} "
          f"({args.tokenizer or 'tiny, no generation markers'}); same token ids: {same}")
    base = rows["tokenize every sequence whole (transformers)"][2]
    print(f"| {'encoding':46} | {'chars tokenized':>15} | {'wall s':>7} | {'vs whole':>8} |")
    print(f"|{'-' * 48}|{'-' * 17}|{'-' * 9}|{'-' * 10}|")
    for name, (_, chars, seconds) in rows.items():
        print(f"| {name:46} | {chars:15,} | {seconds:7.3f} | {seconds / base:8.2f} |")
    if not same:
        raise SystemExit("token ids differ")


if __name__ == "__main__":
    main()
