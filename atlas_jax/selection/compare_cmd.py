"""`atlas-jax compare-masks A B [--per-item] [--json OUT]`: how close mask B is to reference mask A."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", help="reference mask JSONL (e.g. the oracle's)")
    parser.add_argument("b", metavar="B", help="candidate mask JSONL (e.g. a score-based selection)")
    parser.add_argument("--per-item", action="store_true", help="print every trajectory's numbers")
    parser.add_argument("--json", metavar="OUT", help="write everything as one JSON object")


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def run(args: argparse.Namespace) -> int:
    from atlas_jax.outputs import atomic_write, prepare_output
    from atlas_jax.selection.compare import compare_files

    if args.json:
        prepare_output(args.json, inputs=[args.a, args.b])
    result = compare_files(args.a, args.b)
    o = result.overall
    print(f"compared {o['trajectories']} trajectories; {len(result.only_in_a)} only in A, "
          f"{len(result.only_in_b)} only in B (not compared)")
    print(f"steps: {o['steps_a']} in A, {o['steps_b']} in B, {o['steps_both']} in both")
    print(f"overall (pooled):  precision {_fmt(o['precision'])}  recall {_fmt(o['recall'])}  "
          f"jaccard {_fmt(o['jaccard'])}")
    print(f"per trajectory (mean): precision {_fmt(o['macro_precision'])}  recall {_fmt(o['macro_recall'])}  "
          f"jaccard {_fmt(o['macro_jaccard'])}")
    if result.per_criterion:
        print("agreement per criterion of A (steps in A, also in B, recall"
              + (", same criterion rate)" if any("same_criterion_rate" in r for r in result.per_criterion.values())
                 else ")"))
        for label, row in result.per_criterion.items():
            extra = f"  same {_fmt(row['same_criterion_rate'])}" if "same_criterion_rate" in row else ""
            print(f"  {label:22s} {row['in_a']:6d} {row['selected_by_b']:6d}  {_fmt(row['recall'])}{extra}")
    if args.per_item:
        for r in result.per_item:
            print(f"  {r['item_id']}: A={r['a']} B={r['b']} P={_fmt(r['precision'])} R={_fmt(r['recall'])} "
                  f"J={_fmt(r['jaccard'])}")
    if args.json:
        with atomic_write(args.json) as f:
            json.dump(result.to_json(), f, indent=1)
        print(f"wrote {args.json}")
    return 0
