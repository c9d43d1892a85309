"""`atlas-jax ablate --config configs/ablation/NAME.yaml [dotted.key=value ...] [--rows all,atlas,...]`.

Runs the base stage, then every (row, seed): mask, fine-tune, evaluation; writes table.md,
table.json and table.png under output_dir. Finished rows are kept: rerun the same command to resume.
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="ablation YAML (see configs/ablation/)")
    parser.add_argument("--rows", help="comma list of rows to run now (default: the config's rows); "
                                       "the table shows every finished row")
    parser.add_argument("--table-only", action="store_true", help="only rewrite the table from finished rows")
    parser.add_argument("overrides", nargs="*", metavar="dotted.key=value",
                        help="config overrides, e.g. seeds=[0,1] finetune.epochs=2 output_dir=runs/x")


def run(args: argparse.Namespace) -> int:
    from atlas_jax.ablate.config import load_ablation_config
    from atlas_jax.ablate.runner import Ablation, check_resume
    from atlas_jax.ablate.stages import StageError
    from atlas_jax.ablate.table import write_table
    from atlas_jax.train.trainer import NonFiniteLossError

    cfg = load_ablation_config(args.config, args.overrides)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows is not None else None
    if args.table_only:
        check_resume(cfg)
        write_table(cfg)
        return 0
    try:
        Ablation(cfg, rows).run()
    except StageError as e:
        print(f"atlas-jax ablate: {e}", file=sys.stderr)
        return 1
    except NonFiniteLossError as e:  # as `atlas-jax train`: exit 3, the last good checkpoint kept
        print(f"atlas-jax ablate: {e}", file=sys.stderr)
        return 3
    return 0
