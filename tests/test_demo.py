"""`make demo` (launch/demo.sh) is wired: run with stand-in `atlas-jax` and `python` executables that only
record their arguments, every command must parse with the real CLI, every training config must
validate, and each stage must read what the one before wrote. (The real demo takes minutes; this
takes a second.) Also: a training run without a progress bar prints its loss as it trains."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from atlas_jax.cli import build_parser
from atlas_jax.train.config import load_run_config

REPO = Path(__file__).resolve().parents[1]
RECORDER = f"""#!{sys.executable}
import json, os, sys
if "-" in sys.argv[1:2]:
    sys.stdin.read()
with open(os.environ["DEMO_CALLS"], "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\\n")
"""


def demo_calls(tmp_path) -> tuple[list[list[str]], str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("atlas-jax", "python"):
        (bin_dir / name).write_text(RECORDER)
        (bin_dir / name).chmod(0o755)
    out, calls = str(tmp_path / "demo"), tmp_path / "calls.jsonl"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DEMO_OUT": out, "DEMO_CALLS": str(calls)}
    run = subprocess.run(["bash", str(REPO / "launch/demo.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in calls.read_text().splitlines()], out, run.stdout


def overrides(argv) -> dict[str, str]:
    return dict(a.split("=", 1) for a in argv if "=" in a and not a.startswith("-"))


def test_demo_script_is_wired(tmp_path):
    calls, out, printed = demo_calls(tmp_path)
    commands = [c[1:] for c in calls if c[0] == "atlas-jax"]
    assert [c[0] for c in commands] == ["train", "score", "select", "train", "export", "inspect"]
    parsed = []
    for argv in commands:
        args = build_parser(argv[0]).parse_args(argv)  # every flag exists
        if args.command == "train":
            cfg = load_run_config(args.config, args.overrides)  # every key exists and validates
            keys = overrides(args.overrides)
            assert keys.get("train.progress_bar") == "false" and 0 < cfg.train.log_every <= cfg.train.steps, argv
            args.cfg = cfg
        parsed.append(args)
    base, score, select, atlas, export, inspect = parsed
    assert base.cfg.output_dir == f"{out}/base" and base.cfg.data.mask_file is None
    assert score.model == f"{base.cfg.output_dir}/checkpoints" and score.tokenizer == base.cfg.data.tokenizer
    assert select.selector == "score" and select.scores == score.out and not select.allow_unscored
    assert sorted(select.data) == sorted(score.data) == sorted(atlas.cfg.data.train_files)
    assert atlas.cfg.data.mask_file == select.out and atlas.cfg.model.init_from == score.model
    assert export.checkpoint == f"{atlas.cfg.output_dir}/checkpoints"
    # the end: one trajectory as training saw it (same mask, same cut), critical steps highlighted
    assert inspect.mask == select.out and inspect.limit == 1 and inspect.max_length == atlas.cfg.data.seq_len
    assert inspect.tokenizer == atlas.cfg.data.tokenizer and inspect.color != "never"
    python = [c for c in calls if c[0] == "python"]
    assert any("build_tiny_tokenizer" in " ".join(c) for c in python) and python[-1][1:3] == ["-", f"{out}/hf"]
    assert f"{out}/atlas/metrics.jsonl" in printed


def test_training_without_a_progress_bar_prints_the_loss(tmp_path, capsys, monkeypatch):
    from atlas_jax.train.metrics import MetricsWriter
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # its import takes seconds; not what is tested here
    writer = MetricsWriter(tmp_path, total_steps=12, progress_bar=False)
    writer.write(4, {"loss": 5.901036, "lr": 0.0018, "grad_norm": 1.88621, "real_tokens_per_sec": 979.7, "tokens": 3938.0})
    writer.write(4, {"loss": 4.5}, prefix="eval")  # held-out losses have their own message
    writer.close()
    lines = capsys.readouterr().err.splitlines()
    assert [line for line in lines if "tensorboardX" not in line] == [
        "step 4/12: loss 5.9010, lr 0.0018, grad norm 1.89, 980 tokens/s"]
