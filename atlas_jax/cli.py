"""The `atlas-jax` entry point: parse arguments and hand off to the library.

Each subcommand lives in the package that owns it, as a module with
``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only when
their subcommand runs, so `atlas-jax --help` does not start JAX.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "import": ("atlas_jax.convert.import_cmd", "Hugging Face directory -> atlas-jax Orbax checkpoint"),
    "export": ("atlas_jax.convert.export_cmd", "atlas-jax checkpoint -> Hugging Face directory"),
    "train": ("atlas_jax.train.train_cmd", "weighted-loss training from a YAML config (+ dotted.key=value overrides)"),
    "inspect": ("atlas_jax.data.inspect_cmd", "show trajectories as training sees them: tokens, steps, loss weights"),
    "experts": ("atlas_jax.envs.experts_cmd", "expert trajectories (AgentTraj-L JSONL) from an offline environment"),
    "eval": ("atlas_jax.envs.eval_cmd", "run the model as the agent in an environment -> per-episode JSONL + success rates"),
    "serve-env": ("atlas_jax.envs.serve_env", "serve an offline environment over AgentGym's HTTP protocol"),
    "score": ("atlas_jax.selection.score_cmd", "per-step importance metrics from a JAX scoring pass -> scores JSONL"),
    "select": ("atlas_jax.selection.select_cmd", "critical-step selection (oracle, score, random, ...) -> mask JSONL"),
    "compare-masks": ("atlas_jax.selection.compare_cmd", "precision/recall/Jaccard of mask B against mask A"),
    "ablate": ("atlas_jax.ablate.cmd", "the paper's ablation table: rows all/atlas/random/noncritical/perplexity, resumable"),
}


def _add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    importlib.import_module(COMMANDS[name][0]).add_arguments(parser)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atlas-jax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == only:  # argument definitions may import heavy modules: only for the command run
            _add_arguments(name, p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    # user errors (ConfigError is a ValueError; OSError covers missing, read-only and full paths): one line, no traceback
    except (OSError, ValueError, KeyError) as e:
        print(f"atlas-jax {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
