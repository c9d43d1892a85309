"""Bad Hugging Face inputs fail with a clear message and leave no output directory behind."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from atlas_jax.cli import main
from atlas_jax.convert.safetensors_io import SafetensorsReader, write_file


@pytest.fixture
def hf_copy(hf_dirs, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(hf_dirs["llama"], src)
    return src


def edit_config(hf_dir, **changes):
    path = hf_dir / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def rewrite_weights(hf_dir, drop=(), add=None):
    reader = SafetensorsReader(hf_dir)
    tensors = {n: np.array(reader.get(n)) for n in reader.names() if n not in drop}
    tensors.update(add or {})
    del reader
    write_file(hf_dir / "model.safetensors", tensors)


def run_import(hf_dir, tmp_path, capsys):
    out = tmp_path / "ckpt"
    code = main(["import", "--hf", str(hf_dir), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert not out.exists(), "a failed import must not leave an output directory"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ckpt")], "temporary directory left behind"
    return err


def test_missing_safetensors(hf_copy, tmp_path, capsys):
    (hf_copy / "model.safetensors").unlink()
    err = run_import(hf_copy, tmp_path, capsys)
    assert "no model.safetensors or model.safetensors.index.json" in err and str(hf_copy) in err


def test_truncated_safetensors(hf_copy, tmp_path, capsys):
    path = hf_copy / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size - 100])
    err = run_import(hf_copy, tmp_path, capsys)
    assert "truncated" in err and "model.safetensors" in err


def test_missing_shard(hf_dirs, tmp_path, capsys):
    import torch  # noqa: F401  (save_pretrained of the sharded copy)
    from transformers import AutoModelForCausalLM

    src = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(hf_dirs["qwen2"]).save_pretrained(src, max_shard_size="40KB")
    shard = sorted(src.glob("model-*.safetensors"))[1]
    shard.unlink()
    err = run_import(src, tmp_path, capsys)
    assert shard.name in err and "missing" in err


def test_shape_does_not_match_config(hf_copy, tmp_path, capsys):
    edit_config(hf_copy, intermediate_size=96)
    err = run_import(hf_copy, tmp_path, capsys)
    assert "'model.layers.0.mlp.down_proj.weight': shape (64, 128) does not match the config" in err


def test_missing_tensor(hf_copy, tmp_path, capsys):
    rewrite_weights(hf_copy, drop=("model.layers.1.mlp.up_proj.weight",))
    err = run_import(hf_copy, tmp_path, capsys)
    assert "model.layers.1.mlp.up_proj.weight" in err and "missing" in err


def test_unexpected_tensor(hf_copy, tmp_path, capsys):
    rewrite_weights(hf_copy, add={"model.layers.0.self_attn.q_norm.weight": np.ones(16, np.float32)})
    err = run_import(hf_copy, tmp_path, capsys)
    assert "model.layers.0.self_attn.q_norm.weight" in err


@pytest.mark.parametrize("changes, message", [
    (dict(model_type="gpt2"), "unsupported model_type 'gpt2'"),
    (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}), "rope scaling type 'yarn'"),
    (dict(hidden_act="gelu"), "hidden_act 'gelu'"),
])
def test_unsupported_config(hf_copy, tmp_path, capsys, changes, message):
    edit_config(hf_copy, **changes)
    err = run_import(hf_copy, tmp_path, capsys)
    assert message in err and "config.json" in err


def test_export_refuses_to_overwrite_and_missing_checkpoint(hf_dirs, tmp_path, capsys):
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 2
    assert "not an atlas-jax checkpoint" in capsys.readouterr().err and not out.exists()
    assert main(["import", "--hf", str(hf_dirs["llama"]), "--out", str(ckpt)]) == 0
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_overwrite_never_destroys_an_input(hf_dirs, tmp_path, capsys):
    """`export --checkpoint RUN/checkpoints --out RUN --overwrite` used to delete the whole run."""
    hf = tmp_path / "hf"
    shutil.copytree(hf_dirs["llama"], hf)
    run = tmp_path / "run"
    ckpt = run / "checkpoints"
    assert main(["import", "--hf", str(hf), "--out", str(ckpt)]) == 0
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    for out, relation in [(run, "contains"), (ckpt, "is"), (ckpt / "hf_export", "lies inside")]:
        assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert f"the output {relation} the input" in err and str(out) in err
    for out in (hf, hf / "sub", tmp_path):
        assert main(["import", "--hf", str(hf), "--out", str(out), "--overwrite"]) == 2
        assert "the input" in capsys.readouterr().err
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before, "an input was touched"


def test_export_dtype_is_what_config_says(hf_dirs, tmp_path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    ckpt, out = tmp_path / "ckpt", tmp_path / "bf16"
    assert main(["import", "--hf", str(hf_dirs["llama"]), "--out", str(ckpt)]) == 0
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--dtype", "bfloat16"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16" and config.get("dtype", "bfloat16") == "bfloat16"
    assert AutoConfig.from_pretrained(out).dtype == torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_damaged_newest_checkpoint_falls_back(hf_dirs, tmp_path, capsys):
    """A damaged newest step is named (path and step) and the newest complete step is used."""
    from atlas_jax.convert.checkpoint import load_hf, save_params

    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    assert main(["import", "--hf", str(hf_dirs["llama"]), "--out", str(ckpt)]) == 0
    other = load_hf(hf_dirs["llama"], dtype="float32")
    save_params(ckpt, other, step=5)
    for f in (ckpt / "5" / "params").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "manifest" not in f.name:
            f.write_bytes(b"\0" * 7)  # a torn write
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "step 5 cannot be restored" in err and str(ckpt) in err and "restored step 0" in err
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o2"), "--step", "5"]) == 2
    err = capsys.readouterr().err
    assert "no restorable checkpoint step" in err and "step 5" in err
