"""`atlas-jax experts --env ENV --episodes N --out TRAJ`: expert trajectories as AgentTraj-L JSONL."""
from __future__ import annotations

import argparse
import json
import sys

from atlas_jax.envs.base import TaskFamilies, add_family_arguments
from atlas_jax.envs.registry import ENVS
from atlas_jax.outputs import atomic_write, prepare_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", required=True, choices=sorted(ENVS), help="environment")
    parser.add_argument("--episodes", type=int, required=True, help="task indices to attempt")
    parser.add_argument("--out", required=True, help="output JSONL (AgentTraj-L); only successful episodes")
    parser.add_argument("--split", default="train", choices=("train", "eval"), help="which task indices")
    parser.add_argument("--skip", type=int, default=0, help="skip this many task indices of the split first")
    add_family_arguments(parser)
    parser.add_argument("--max-steps", type=int, default=None, help="per-episode step limit (env default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def write_jsonl(path: str, records) -> int:
    """Write ``records`` to ``path`` all at once at the end: an existing file stays as it was
    until then; if the run is interrupted, the records finished so far go to PATH.partial."""
    prepare_output(path)
    partial = f"{path}.partial"
    count = 0
    try:
        with atomic_write(path, keep_partial=partial) as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                f.flush()
                count += 1
    except KeyboardInterrupt:
        print(f"interrupted: {count} finished trajectories kept in {partial}; {path} untouched", file=sys.stderr)
        raise
    return count


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from atlas_jax.envs.experts import ExpertReport, generate
    from atlas_jax.envs.registry import make_env

    if args.episodes <= 0:
        raise ValueError(f"--episodes must be positive, got {args.episodes}")
    prepare_output(args.out)  # before any episode is played
    env = make_env(args.env, max_steps=args.max_steps)
    try:
        families = TaskFamilies.parse(args.families, args.exclude_families)
        indices = env.task_indices(args.split, args.episodes, start=args.skip, families=families)
        if not indices:
            raise ValueError(f"experts {args.env}: no task of split {args.split!r} after skipping {args.skip}"
                             + (f" ({families})" if families else ""))
        report = ExpertReport(args.env)
        with tqdm(total=len(indices), desc=f"experts {args.env}", unit="ep", file=sys.stderr,
                  disable=args.no_progress) as progress:
            write_jsonl(args.out, generate(env, indices, report, progress))
    finally:
        env.close()
    for line in report.lines():
        print(line)
    print(f"wrote {report.kept} trajectories to {args.out}")
    return 0
