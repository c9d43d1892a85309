"""A tiny ablation config: a tokenizer trained on the base data (as cpu_small), a 2-layer 64-wide random Llama as the base stage's
starting point, eight trajectories of the bundled BabyAI sample as base data, six BabyAI expert
episodes (other tasks) as the rows' training set, two episodes per evaluation environment."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tests.train.conftest import TINY_MODEL as TRAIN_TINY_MODEL

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = {**TRAIN_TINY_MODEL, "max_position_embeddings": 4096}  # eval episodes run past 1024 tokens


def tiny_ablation(root: Path, rows=("all", "atlas"), seeds=(0,)) -> Path:
    """Writes root/ablation.yaml (+ the model config) and returns its path."""
    root.mkdir(parents=True, exist_ok=True)
    sample = (REPO / "data/sample/babyai_train.jsonl").read_text().splitlines(keepends=True)
    (root / "base.jsonl").write_text("".join(sample[:8]))
    (root / "tiny_model.json").write_text(json.dumps(TINY_MODEL))
    config = {
        "output_dir": str(root / "out"),
        "train_config": str(REPO / "configs/tiny_cpu.yaml"),
        "tokenizer": "trained",
        "tokenizer_vocab_size": TINY_MODEL["vocab_size"],
        "ratio": 0.3,
        "seeds": list(seeds),
        "rows": list(rows),
        "train": {"model": {"config": str(root / "tiny_model.json"), "dtype": "float32"},
                  "data": {"seq_len": 1024, "global_batch_size": 4},
                  "eval": {"files": []},
                  "train": {"save_every": 0, "progress_bar": False, "log_every": 1, "async_checkpointing": False},
                  "optim": {"warmup_steps": 0},
                  "mesh": {"num_devices": 1}},
        "base": {"data": {"files": [str(root / "base.jsonl")]}, "epochs": 1},
        "finetune": {"data": {"experts": [{"env": "babyai", "episodes": 6, "skip": 0}]}, "epochs": 1},
        "selection": {"score_variants": "full", "combine": "nll_mean=1", "score_seq_len": 1024,
                      "score_batch_size": 4, "score_dtype": "float32"},
        "eval": {"held_in": [{"env": "babyai", "episodes": 2}], "held_out": [{"env": "textcraft", "episodes": 2}],
                 "batch_size": 2, "max_new_tokens": 8, "max_steps": 2, "max_len": 2048,
                 "on_unparsable": "continue", "prefill_chunk": 512},
    }
    path = root / "ablation.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def child_env():
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false",
               PYTHONWARNINGS="ignore")
    env.pop("XLA_FLAGS", None)  # one CPU device in the child, as a user's run
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the runner's own cache under output_dir
    return env
