"""`atlas-jax score`'s --seq-len (issue 12, point 3): the default covers the data; a length that
cuts steps (given, or the model's limit) is reported before the work, with the counts that a
transformers tokenization gives, and the null scores are counted after it."""
from __future__ import annotations

import json
import shutil

import pytest

from atlas_jax.cli import main
from atlas_jax.selection.scores_io import read_scores
from tests.selection.conftest import corpus

ROLES = {"system": "system", "human": "user", "gpt": "assistant"}


@pytest.fixture(scope="module")
def reference(tokenizer):
    """Per trajectory of the corpus: (token count, last position of each step), from transformers'
    assistant-token mask (steps are its runs of 1s)."""
    out = {}
    for record in corpus():
        messages = [{"role": ROLES[t["from"]], "content": t["value"]} for t in record["conversations"]]
        enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        mask = enc["assistant_masks"]
        ends = [t for t in range(len(mask)) if mask[t] and (t + 1 == len(mask) or not mask[t + 1])]
        out[record["item_id"]] = (len(enc["input_ids"]), ends)
    return out


def _score(hf_dir, tokenizer_dir, traj_file, out, *extra):
    return main(["score", "--model", hf_dir, "--tokenizer", tokenizer_dir, "--data", traj_file, "--out", str(out),
                 "--chunk", "64", "--batch-size", "8", "--dtype", "float32", "--variants", "full", *extra])


def _expected_cut(reference, seq_len):
    steps = sum(end >= seq_len for _, ends in reference.values() for end in ends)
    return (sum(n > seq_len for n, _ in reference.values()), steps,
            sum(len(ends) for _, ends in reference.values()), max(n for n, _ in reference.values()))


def test_default_seq_len_covers_the_data(hf_dir, tokenizer_dir, traj_file, reference, tmp_path, capsys):
    longest = max(n for n, _ in reference.values())
    expected = -(-longest // 256) * 256
    assert _score(hf_dir, tokenizer_dir, traj_file, tmp_path / "s.jsonl") == 0
    captured = capsys.readouterr()
    assert (f"seq-len: {expected} (default: covers the longest trajectory, {longest} tokens, rounded up to a "
            "multiple of 256)") in captured.out
    assert "WARNING" not in captured.err
    scores = read_scores(tmp_path / "s.jsonl")
    assert all(s["truncated"] is False and s["nll_mean"] is not None for r in scores.values() for s in r["steps"])
    with open(tmp_path / "s.jsonl") as f:
        assert json.loads(f.readline())["scorer"]["seq_len"] == expected


def test_a_cutting_seq_len_is_reported_before_and_after_the_work(hf_dir, tokenizer_dir, traj_file, reference,
                                                                 tmp_path, capsys):
    trajectories, steps, total, longest = _expected_cut(reference, 128)
    assert steps > 0  # the corpus has steps beyond 128 tokens
    assert _score(hf_dir, tokenizer_dir, traj_file, tmp_path / "s.jsonl", "--seq-len", "128") == 0
    err = capsys.readouterr().err
    assert (f"WARNING: --seq-len cuts {trajectories} of 5 trajectories to 128 tokens (the longest has {longest}): "
            f"{steps} of {total} steps lose tokens and get null scores") in err
    assert f"omit --seq-len to cover the data ({-(-longest // 256) * 256})" in err
    null = sum(s["nll_mean"] is None for r in read_scores(tmp_path / "s.jsonl").values() for s in r["steps"])
    assert null == steps
    assert f"WARNING: {steps} of {total} step scores are null (their sequences were cut to seq_len 128)" in err


def test_default_is_capped_by_the_model_and_says_so(hf_dir, tokenizer_dir, traj_file, reference, tmp_path, capsys):
    short = tmp_path / "short_model"
    shutil.copytree(hf_dir, short)
    config = json.loads((short / "config.json").read_text())
    config["max_position_embeddings"] = 300  # rounded down to 256 rows
    (short / "config.json").write_text(json.dumps(config))
    trajectories, steps, total, longest = _expected_cut(reference, 256)
    assert _score(str(short), tokenizer_dir, traj_file, tmp_path / "s.jsonl") == 0
    captured = capsys.readouterr()
    assert "seq-len: 256 (default: covers the longest trajectory" in captured.out
    assert "capped by the model's max_position_embeddings 300" in captured.out
    assert steps > 0
    assert (f"WARNING: the model's max_position_embeddings (300) cuts {trajectories} of 5 trajectories to 256 "
            f"tokens (the longest has {longest}): {steps} of {total} steps") in captured.err


def test_default_rounding_by_hand():
    from atlas_jax.selection.seq_len import TrajectoryLength, default_seq_len

    lengths = [TrajectoryLength(700, (300, 699)), TrajectoryLength(20, (19,))]
    assert default_seq_len(lengths, chunk=256, max_positions=None) == 768
    assert default_seq_len(lengths, chunk=512, max_positions=None) == 1024  # a multiple of the chunk too
    assert default_seq_len(lengths, chunk=96, max_positions=None) == 768  # lcm(256, 96)
    assert default_seq_len(lengths, chunk=64, max_positions=4096) == 768
    assert default_seq_len(lengths, chunk=64, max_positions=600) == 512  # capped, rounded down
    assert default_seq_len(lengths, chunk=64, max_positions=200) == 192  # below 256: a multiple of the chunk
