"""The scoring pass against a direct transformers (PyTorch) computation on the same tiny model."""
from __future__ import annotations

import json

import numpy as np
import pytest

from atlas_jax.cli import main
from atlas_jax.selection.scores_io import read_scores


def _runs(mask) -> list[list[int]]:
    """Token positions of each maximal run of 1s."""
    runs, prev = [], 0
    for t, m in enumerate(mask):
        if m and not prev:
            runs.append([])
        if m:
            runs[-1].append(t)
        prev = m
    return runs


def _reference(model, tokenizer, requests) -> list[tuple[float, float, float, int]]:
    """(nll_sum, nll_mean, entropy_mean, tokens) by transformers for each (messages, assistant run; -1 = last).

    One forward over all requests, right-padded: causal attention keeps padding out of earlier positions.
    """
    import torch

    encoded = [tokenizer.apply_chat_template(m, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
               for m, _ in requests]
    width = max(len(e["input_ids"]) for e in encoded)
    ids = torch.tensor([e["input_ids"] + [0] * (width - len(e["input_ids"])) for e in encoded])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits.double(), dim=-1)
    out = []
    for row, (enc, (_, run)) in enumerate(zip(encoded, requests)):
        positions = _runs(enc["assistant_masks"])[run]
        nll = torch.stack([-logp[row, t - 1, ids[row, t]] for t in positions])
        entropy = torch.stack([-(logp[row, t - 1].exp() * logp[row, t - 1]).sum() for t in positions])
        out.append((float(nll.sum()), float(nll.mean()), float(entropy.mean()), len(positions)))
    return out


@pytest.fixture(scope="module")
def torch_model(hf_dir):
    import torch
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(hf_dir, attn_implementation="eager", dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def scores(hf_dir, tokenizer_dir, traj_file, tmp_path_factory):
    """Scores from the CLI on the 8-device CPU mesh, short rows so sequences pack several to a row."""
    out = tmp_path_factory.mktemp("scores") / "scores.jsonl"
    rc = main(["score", "--model", hf_dir, "--tokenizer", tokenizer_dir, "--data", traj_file, "--out", str(out),
               "--seq-len", "256", "--chunk", "64", "--batch-size", "8", "--dtype", "float32",
               "--group-size", "2"])  # three groups, one jitted step
    assert rc == 0
    return read_scores(out)


def test_scores_match_transformers(scores, torch_model, tokenizer, traj_file):
    from atlas_jax.data.trajectory import read_trajectories

    trajectories, _ = read_trajectories(traj_file)
    assert set(scores) == {t.item_id for t in trajectories}
    checked = 0
    for traj in trajectories:
        messages = traj.messages()
        steps = scores[traj.item_id]["steps"]
        assistant_at = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        head = [m for m in messages[:1] if m["role"] == "system"]
        first_user = next(m for m in messages if m["role"] == "user")
        requests = [(messages, k) for k in range(len(steps))]  # full history
        requests += [(head + [first_user, messages[assistant_at[k]]], -1) for k in range(len(steps))]  # task only
        for k in range(1, len(steps)):  # the observation before step k blanked
            blanked = [dict(m) for m in messages[:assistant_at[k] + 1]]
            blanked[-2]["content"] = ""
            requests.append((blanked, -1))
        ref = _reference(torch_model, tokenizer, requests)
        full, prompt_only, no_obs = ref[:len(steps)], ref[len(steps):2 * len(steps)], [None] + ref[2 * len(steps):]
        for k, got in enumerate(steps):
            nll_sum, nll_mean, entropy_mean, tokens = full[k]
            assert got["tokens"] == tokens
            np.testing.assert_allclose([got["nll_sum"], got["nll_mean"], got["entropy_mean"]],
                                       [nll_sum, nll_mean, entropy_mean], rtol=2e-5, atol=1e-5)
            np.testing.assert_allclose(got["nll_mean_prompt_only"], prompt_only[k][1], rtol=2e-5, atol=1e-5)
            np.testing.assert_allclose(got["ifd"], nll_mean / prompt_only[k][1], rtol=5e-5)
            if k == 0:
                assert got["nll_mean_no_obs"] is None and got["obs_dependence"] is None
            else:
                np.testing.assert_allclose(got["nll_mean_no_obs"], no_obs[k][1], rtol=2e-5, atol=1e-5)
                np.testing.assert_allclose(got["obs_dependence"], no_obs[k][1] - nll_mean, rtol=1e-3, atol=2e-5)
            assert got["truncated"] is False
            checked += 1
    assert checked == sum(t.num_steps for t in trajectories)


def test_truncated_steps_are_null_and_reported(hf_dir, tokenizer_dir, traj_file, tmp_path, capsys):
    """Rows shorter than the longest trajectory: its late steps get null metrics, never wrong ones."""
    out = tmp_path / "scores.jsonl"
    rc = main(["score", "--model", hf_dir, "--tokenizer", tokenizer_dir, "--data", traj_file, "--out", str(out),
               "--seq-len", "128", "--chunk", "64", "--batch-size", "8", "--dtype", "float32",
               "--variants", "full", "--mesh", "2,2,2"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "tokens/s" in printed and "cut to seq_len" in printed
    long = read_scores(out)["traj_4"]["steps"]
    assert long[0]["truncated"] is False and long[0]["nll_mean"] is not None
    assert long[-1]["truncated"] is True and long[-1]["nll_mean"] is None and long[-1]["tokens"] > 0
    assert "ifd" not in long[0] and "obs_dependence" not in long[0]  # variants not run
    with open(out) as f:
        assert json.loads(f.readline())["scorer"]["variants"] == ["full"]


def test_bad_options_fail_before_loading(tmp_path, traj_file):
    rc = main(["score", "--model", str(tmp_path / "missing"), "--tokenizer", str(tmp_path), "--data", traj_file,
               "--out", str(tmp_path / "s.jsonl"), "--seq-len", "100", "--chunk", "64"])
    assert rc == 1
