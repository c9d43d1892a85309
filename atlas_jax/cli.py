"""The `atlas-jax` entry point: parse arguments and hand off to the library.

Each subcommand lives in the package that owns it, as a module with
``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only when
their subcommand runs, so `atlas-jax --help` does not start JAX. User errors end a command with one
line and exit status 2 (``user_error_message``); set ATLAS_JAX_TRACEBACK=1 to see their traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
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


USER_ERROR_EXIT = 2  # as argparse exits for a bad command line
# user errors raised by the project that are not ValueError/KeyError: (module, class), checked only once imported
# (a non-finite loss is not one: train and ablate turn it into exit status 3 themselves)
_PROJECT_ERRORS = (("atlas_jax.envs.agentgym_client", "ServerError"), ("atlas_jax.ablate.stages", "StageError"))
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _raised_by_project(e: BaseException) -> bool:
    """Whether the innermost frame of ``e``'s traceback is atlas-jax code: a check written for the user,
    not a library's ValueError from a shape mismatch (a programming error, which keeps its traceback)."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_PACKAGE_DIR + os.sep)


def user_error_message(e: BaseException) -> str | None:
    """One line for a user error (bad input, a path the OS refuses), None for a programming error.

    OSError: always a user error (missing file, permission denied, is a directory, read-only or full
    folder), shown with its path. ValueError/KeyError and the project's own error classes: when atlas-jax
    raised them. A bare UnicodeDecodeError or JSONDecodeError means a reader failed to name its file
    and line: a bug, shown with its traceback."""
    if isinstance(e, OSError):
        if e.filename is None or not e.strerror:
            text = str(e)
        else:
            text = f"{e.strerror}: {os.fsdecode(e.filename)}" + (
                f" -> {os.fsdecode(e.filename2)}" if e.filename2 is not None else "")
    else:
        kinds = (ValueError, KeyError) + tuple(getattr(sys.modules[m], c) for m, c in _PROJECT_ERRORS
                                              if m in sys.modules)
        if not isinstance(e, kinds) or isinstance(e, (UnicodeError, json.JSONDecodeError)):
            return None
        if not _raised_by_project(e):
            return None
        text = e.args[0] if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a user error ends it with one line on stderr and exit status 2."""
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
    except Exception as e:  # the one place that turns user errors into messages; anything else propagates
        message = user_error_message(e)
        if message is None or os.environ.get("ATLAS_JAX_TRACEBACK"):
            raise
        print(f"atlas-jax {args.command}: error: {message}", file=sys.stderr)
        return USER_ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())
