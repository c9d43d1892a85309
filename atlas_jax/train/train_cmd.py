"""`atlas-jax train --config CONFIG [dotted.key=value ...]`."""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML run config (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="dotted.key=value",
                        help="config overrides, e.g. train.steps=100 output_dir=runs/x data.mask_file=mask.jsonl")


def run(args: argparse.Namespace) -> int:
    from atlas_jax.train.multihost import maybe_initialize_distributed

    maybe_initialize_distributed()  # before any other JAX use
    from atlas_jax.train.config import load_run_config
    from atlas_jax.train.trainer import NonFiniteLossError, train

    cfg = load_run_config(args.config, args.overrides)
    try:
        result = train(cfg)
    except NonFiniteLossError as e:
        print(f"atlas-jax train: {e}", file=sys.stderr)
        return 3
    import jax
    if jax.process_index() == 0:
        print(f"train {result.status} at step {result.step}\n  checkpoints: {result.checkpoint_dir}\n"
              f"  metrics:     {result.metrics_file}\n"
              f"  export with: atlas-jax export --checkpoint {result.checkpoint_dir} --out HF_DIR")
    return 0
