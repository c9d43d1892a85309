"""Run configs: shipped YAMLs load, overrides apply, and every error names its key."""
from __future__ import annotations

from pathlib import Path

import pytest

from atlas_jax.config_loader import ConfigError, parse_overrides
from atlas_jax.train.config import load_run_config, validate_for_devices

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_shipped_configs_exist_and_load():
    names = {p.stem for p in CONFIGS}
    assert {"tiny_cpu", "llama3.1_8b_atlas", "mistral_7b_atlas", "qwen2.5_7b_atlas", "llama3.2_1b",
            "llama3.2_3b"} <= names
    for path in CONFIGS:
        cfg = load_run_config(path)
        assert cfg.train.steps > 0 and cfg.data.seq_len > 0, path


def test_overrides_and_fixed_names():
    cfg = load_run_config("configs/tiny_cpu.yaml", ["output_dir=/tmp/x", "train.steps=7", "train.seed=3",
                                                    "data.train_files=[a.jsonl,b.jsonl]", "data.mask_file=m.jsonl",
                                                    "model.init_from=/models/x", "model.config=null",
                                                    "optim.learning_rate=1e-4"])
    assert (cfg.output_dir, cfg.train.steps, cfg.train.seed) == ("/tmp/x", 7, 3)
    assert cfg.data.train_files == ("a.jsonl", "b.jsonl") and cfg.data.mask_file == "m.jsonl"
    assert cfg.model.init_from == "/models/x" and cfg.optim.learning_rate == 1e-4
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}


@pytest.mark.parametrize("overrides, message", [
    (["train.stepz=3"], "unknown config key(s) train.stepz"),
    (["train.steps=ten"], "train.steps: expected an integer, got 'ten'"),
    (["data.train_files=a.jsonl"], "data.train_files: expected a list"),
    (["optim.schedule=step"], "optim.schedule: expected cosine, linear or constant"),
    (["model.dtype=int8"], "model.dtype: expected one of"),
    (["model.init_from=/x"], "set exactly one of model.init_from"),
    (["bogus=1"], "unknown config key(s) bogus"),
    (["train.steps"], "not of the form dotted.key=value"),
])
def test_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_run_config("configs/tiny_cpu.yaml", overrides)
    assert message in str(e.value)


@pytest.mark.parametrize("overrides, message", [
    (["mesh.fsdp=3"], "mesh data=1 x fsdp=3 x tensor=1 = 3 devices, but 8 are available"),
    (["mesh.tensor=3"], "mesh.fsdp=-1 cannot fill 8 devices"),
    (["mesh.data=-1", "mesh.fsdp=-1"], "only one axis may be -1"),
    (["data.global_batch_size=6"], "cannot be split over mesh data x fsdp = 8 devices"),
    (["optim.grad_accum_steps=3"], "not divisible by optim.grad_accum_steps=3"),
    (["mesh.num_devices=16"], "mesh.num_devices=16: 8 devices are available"),
])
def test_impossible_mesh_is_rejected_before_compiling(overrides, message):
    cfg = load_run_config("configs/tiny_cpu.yaml", overrides + ["data.global_batch_size=8"] * (
        not any(o.startswith("data.global_batch_size") for o in overrides)))
    with pytest.raises(ConfigError) as e:
        validate_for_devices(cfg, num_devices=8, num_processes=1)
    assert message in str(e.value)


def test_cli_reports_config_errors(capsys):
    from atlas_jax.cli import main
    assert main(["train", "--config", "configs/tiny_cpu.yaml", "train.bogus=1"]) == 2
    assert "unknown config key(s) train.bogus" in capsys.readouterr().err
    assert main(["train", "--config", "configs/missing.yaml"]) == 2
    assert "config file not found: configs/missing.yaml" in capsys.readouterr().err


def test_tokenizer_larger_than_the_model_vocabulary_is_refused(train_assets, tmp_path):
    """XLA clips out-of-range embedding gathers silently: such a run must not start."""
    import json

    from atlas_jax.train.trainer import train
    from tests.train.conftest import TINY_MODEL, run_config

    small = tmp_path / "vocab300.json"
    small.write_text(json.dumps({**TINY_MODEL, "vocab_size": 300}))
    cfg = run_config(train_assets, tmp_path / "run", f"model.config={small}")
    with pytest.raises(ConfigError, match=r"has 512 tokens but the model's vocabulary has 300 \(.*vocab300.json\)"):
        train(cfg)
    assert not list((tmp_path / "run").glob("checkpoints/[0-9]*"))  # no step trained or saved
