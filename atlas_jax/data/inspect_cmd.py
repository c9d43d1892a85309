"""`atlas-jax inspect --data TRAJ --tokenizer TOK [--mask MASK] [--json OUT]`: what training sees.

Prints each trajectory's layout as every stage reads it (atlas_jax.data.trajectory): the task
context (system, instruction, AgentGym's acknowledgement, the task), then each step with its
index, whether it is trainable and its weight; then the conversation as its chat template renders
it, weighted tokens highlighted (green; other step tokens underlined; a tag with the step index and
weight, or "context", opens each step), followed by counts. ``--json OUT`` writes one JSON line per
trajectory with ``layout`` (turns with role, kind, step index, trainable) and per-token ``tokens``,
``token_ids``, ``step`` (-1 outside steps) and ``weight`` ("-" writes to stdout).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys

import numpy as np

from atlas_jax.data.mask import UNMASKED_POLICIES, WEIGHT_MODES

GREEN, UNDERLINE, DIM, RESET = "\x1b[42;30m", "\x1b[4m", "\x1b[2m", "\x1b[0m"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, nargs="+", help="trajectory files (JSONL/JSON)")
    parser.add_argument("--tokenizer", required=True, help="Hugging Face tokenizer directory")
    parser.add_argument("--mask", help="critical-step mask JSONL (select's output)")
    parser.add_argument("--mode", choices=WEIGHT_MODES, help="weight mode (default: mask with --mask, else all)")
    parser.add_argument("--unmasked", choices=UNMASKED_POLICIES, default="error",
                        help="mode mask: trajectories without a mask entry")
    parser.add_argument("--item", action="append", help="only this item_id (repeatable)")
    parser.add_argument("--limit", type=int, default=3, help="trajectories to print (default 3; 0 = all)")
    parser.add_argument("--max-length", type=int, help="truncate as training would")
    parser.add_argument("--keep-tail", action="store_true", help="keep tokens after the last weighted token")
    parser.add_argument("--json", metavar="OUT", help="write per-token JSON lines to OUT ('-' = stdout)")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    parser.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                        help="bad trajectory or mask records: stop (default) or skip and count them")


def layout(traj) -> list[dict]:
    """Every turn: its role, what it is to the stages (system / instruction / task / acknowledgement /
    step / observation), its step index and whether that step is trainable."""
    step_of = {turn: k for k, turn in enumerate(traj.step_turn_indices)}
    trainable = set(traj.trainable_steps)
    last_context_user = max((i for i in range(traj.context_end) if traj.turns[i].role == "user"), default=-1)
    out = []
    for i, turn in enumerate(traj.turns):
        entry = {"turn": i, "role": turn.role, "in_task_context": i < traj.context_end}
        if turn.role == "assistant":
            k = step_of[i]
            entry.update(step=k, trainable=k in trainable,
                         kind="step" if k in trainable else ("acknowledgement" if i < traj.context_end else "context"))
        else:
            entry["kind"] = ("system" if turn.role == "system" else "task" if i == last_context_user
                             else "instruction" if i < traj.context_end else "observation")
        out.append(entry)
    return out


def _describe(traj, turns: list[dict], step_tokens, step_weights) -> str:
    lines = [f"task context (turns 0-{traj.context_end - 1}, everything before the first trainable step):"]
    for entry in turns:
        if entry["turn"] == traj.context_end:
            lines.append("steps:")
        text = traj.turns[entry["turn"]].content.strip().replace("\n", " ")
        text = text if len(text) <= 70 else text[:67] + "..."
        if "step" in entry:
            k = entry["step"]
            what = (f"trainable, weight {step_weights[k]:g}" if entry["trainable"]
                    else f"{entry['kind']}, loss false: context, never trained or selected")
            lines.append(f"  step {k} ({what}; {step_tokens[k]} tokens): {text}")
        else:
            lines.append(f"  [{entry['kind']}] {text}")
    return "\n".join(lines)


def _render(tokens: list[str], steps, weights, color: bool, trainable=None) -> str:
    out, prev_step = [], -1
    for text, step, weight in zip(tokens, steps, weights):
        if step >= 0 and step != prev_step:
            tag = f"[step {step} w={weight:g}]" if trainable is None or step in trainable else f"[step {step} context]"
            out.append(f"{DIM}{tag}{RESET}" if color else tag)
        prev_step = step
        if not color:
            out.append(f"«{text}»" if weight > 0 else text)
        elif weight > 0:
            out.append(f"{GREEN}{text}{RESET}")
        elif step >= 0:
            out.append(f"{UNDERLINE}{text}{RESET}")
        else:
            out.append(text)
    return "".join(out)


def run(args: argparse.Namespace) -> int:
    from atlas_jax.data.encode import EncodeOptions, TrajectoryEncoder
    from atlas_jax.data.mask import check_mask_against, read_mask, step_weights
    from atlas_jax.data.trajectory import read_trajectories
    from atlas_jax.jsonl import ReadReport
    from atlas_jax.outputs import atomic_write, prepare_output

    if args.json and args.json != "-":
        prepare_output(args.json, inputs=[*args.data, args.mask])
    trajectories, report = read_trajectories(args.data, on_error=args.on_error)
    mode = args.mode or ("mask" if args.mask else "all")
    mask_report = ReadReport()
    mask = read_mask(args.mask, on_error=args.on_error, report=mask_report) if args.mask else None
    if mask is not None:
        check_mask_against(mask, trajectories)
    options = EncodeOptions(weight_mode=mode, unmasked=args.unmasked, max_length=args.max_length,
                            drop_after_last_weighted=not args.keep_tail)
    encoder = TrajectoryEncoder(args.tokenizer, options, mask)
    if args.item:
        known = {t.item_id for t in trajectories}
        missing = [i for i in args.item if i not in known]
        if missing:
            raise ValueError(f"item_id {missing[0]!r} is not in {', '.join(args.data)}")
        trajectories = [t for t in trajectories if t.item_id in set(args.item)]
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    files = contextlib.ExitStack()
    json_out = None if not args.json else sys.stdout if args.json == "-" else files.enter_context(atomic_write(args.json))
    printed = 0
    with files:
        for traj in trajectories:
            enc = encoder.prepare(traj)
            trained = enc is not None
            if enc is None:  # show it anyway: its tokens and steps, all weights 0 as training sees it
                enc = encoder.encode(traj, np.zeros(traj.num_steps, np.float32))
            tokens = [encoder.tokenizer.decode([int(i)]) for i in enc.token_ids]
            turns = layout(traj)
            if json_out is not None:
                json_out.write(json.dumps({
                    "item_id": traj.item_id, "num_steps": traj.num_steps, "trainable_steps": list(traj.trainable_steps),
                    "layout": turns, "trained": trained, "tokens": tokens,
                    "token_ids": enc.token_ids.tolist(), "step": enc.step_ids.tolist(),
                    "weight": [float(w) for w in enc.token_weights]}) + "\n")
            if json_out is sys.stdout or (args.limit and printed >= args.limit):
                continue
            printed += 1
            weighted_steps = sorted({int(s) for s, w in zip(enc.step_ids, enc.token_weights) if w > 0})
            print(f"=== {traj.item_id} ({traj.source}): {traj.num_steps} steps ({len(traj.trainable_steps)} trainable: "
                  f"{list(traj.trainable_steps)}), weighted steps {weighted_steps}, "
                  f"{len(enc.token_ids)} tokens, {int((enc.token_weights > 0).sum())} weighted"
                  + ("" if trained else " -- NOT TRAINED ON (no weighted tokens or no mask entry)"))
            weights = step_weights(traj, mode, mask, unmasked=args.unmasked) if trained else None
            weights = np.zeros(traj.num_steps, np.float32) if weights is None else weights
            all_steps = encoder.encode(traj, weights).step_ids  # before length handling: every step's tokens
            counts = np.bincount(all_steps[all_steps >= 0], minlength=traj.num_steps)
            print(_describe(traj, turns, counts, weights))
            print(_render(tokens, enc.step_ids.tolist(), enc.token_weights.tolist(), color, set(traj.trainable_steps)))
            print()
    out = sys.stderr if json_out is sys.stdout else sys.stdout
    print(f"trajectories: {report.summary()}", file=out)
    if mask is not None:
        print(f"mask: {mask_report.summary()}", file=out)
    print(f"encoding ({mode}): {encoder.report.summary()}", file=out)
    return 0
