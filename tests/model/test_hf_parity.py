"""Parity with transformers' PyTorch models: logits (float32, max abs diff <= 1e-4) and an
import -> export -> transformers reload round trip that reproduces every weight exactly."""
from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from atlas_jax.cli import main
from atlas_jax.convert.checkpoint import load_hf, load_pretrained
from tests.model.conftest import HF_CONFIGS, build_hf_model, torch_logits

FAMILIES = sorted(HF_CONFIGS)


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_transformers(family, hf_dirs, token_ids):
    ours = load_hf(hf_dirs[family], dtype="float32")
    logits = np.asarray(ours(jnp.asarray(token_ids)))
    reference = torch_logits(hf_dirs[family], token_ids)
    assert logits.shape == reference.shape
    assert np.abs(logits - reference).max() <= 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_import_export_round_trip_is_exact(family, hf_dirs, token_ids, tmp_path):
    ckpt, out = tmp_path / "ckpt", tmp_path / "hf_out"
    assert main(["import", "--hf", str(hf_dirs[family]), "--out", str(ckpt)]) == 0
    # a checkpoint loads back to the same logits
    restored = load_pretrained(ckpt, dtype="float32")
    np.testing.assert_allclose(np.asarray(restored(jnp.asarray(token_ids))),
                               torch_logits(hf_dirs[family], token_ids), atol=1e-4, rtol=0)
    # tiny shard size: several shards plus an index
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--max-shard-size", str(40_000 / 2**30)]) == 0
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((out / s).is_file() for s in shards)
    assert (out / "generation_config.json").is_file()

    original = AutoModelForCausalLM.from_pretrained(hf_dirs[family], dtype=torch.float32).state_dict()
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).state_dict()
    assert sorted(reloaded) == sorted(original)
    for name, tensor in original.items():
        assert torch.equal(reloaded[name], tensor), name


def test_sharded_hf_input_and_bf16_weights(tmp_path, token_ids):
    """A model saved in bfloat16 across several shards imports exactly and exports back to bf16."""
    model = build_hf_model("qwen2", seed=1).to(torch.bfloat16)
    src = tmp_path / "src"
    model.save_pretrained(src, max_shard_size="40KB")
    assert (src / "model.safetensors.index.json").is_file()
    ours = load_hf(src, dtype="float32")
    reference = model.float()
    with torch.no_grad():
        expected = reference(torch.tensor(token_ids, dtype=torch.long)).logits.numpy()
    assert np.abs(np.asarray(ours(jnp.asarray(token_ids))) - expected).max() <= 1e-4

    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    assert main(["import", "--hf", str(src), "--out", str(ckpt)]) == 0
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert next(reloaded.parameters()).dtype == torch.bfloat16
    original = AutoModelForCausalLM.from_pretrained(src).state_dict()
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, original[name]), name


def test_export_copies_tokenizer(hf_dirs, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "a": 1, "b": 2}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok_dir = tmp_path / "tok"
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>").save_pretrained(tok_dir)

    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    assert main(["import", "--hf", str(hf_dirs["llama"]), "--out", str(ckpt)]) == 0
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--tokenizer", str(tok_dir)]) == 0
    from transformers import AutoTokenizer
    assert AutoTokenizer.from_pretrained(out)("a b")["input_ids"] == [1, 2]
