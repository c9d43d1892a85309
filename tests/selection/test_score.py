"""The scoring pass against a direct transformers (PyTorch) computation on the same tiny model."""
from __future__ import annotations

import json

import numpy as np
import pytest

from atlas_jax.cli import main
from atlas_jax.selection.scores_io import read_scores
from tests.selection.conftest import ACK, write_jsonl


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
               "--seq-len", "512", "--chunk", "64", "--batch-size", "8", "--dtype", "float32",
               "--group-size", "2"])  # three groups, one jitted step
    assert rc == 0
    return read_scores(out)


SYS, INSTR = "You are an agent.", "Every round you get an observation. Act."
GOAL = "Your goal: go to the red key. You see a wall."
S1, S2, S3 = "Thought: look first. Action: look", "Thought: take it. Action: pick up red key", "Action: open door"
O1, O2 = "Observation: a red key on the table.", "Observation: you pick up the red key."
T0, P0, P1, Q0 = "Task: go to the green ball.", "Action: move forward 1", "Action: done", "Observation: the ball."


def m(*turns):
    """Messages from (role letter, text): s system, u user, a assistant."""
    return [{"role": {"s": "system", "u": "user", "a": "assistant"}[r], "content": c} for r, c in turns]


GYM = m(("s", SYS), ("u", INSTR), ("a", ACK), ("u", GOAL), ("a", S1), ("u", O1), ("a", S2), ("u", O2), ("a", S3))
PLAIN = m(("u", T0), ("a", P0), ("u", Q0), ("a", P1))
# What each counterfactual conditions on, written out by hand (not rebuilt with the code's rules):
# (messages, which assistant run is scored: -1 = the last)
EXPECTED = {
    "gym": {  # step 0 = the acknowledgement: scored in full only; the goal (GOAL) is in every prompt_only
        "prompt_only": {1: (m(("s", SYS), ("u", INSTR), ("a", ACK), ("u", GOAL), ("a", S1)), -1),
                        2: (m(("s", SYS), ("u", INSTR), ("a", ACK), ("u", GOAL), ("a", S2)), -1),
                        3: (m(("s", SYS), ("u", INSTR), ("a", ACK), ("u", GOAL), ("a", S3)), -1)},
        "no_obs": {2: (m(("s", SYS), ("u", INSTR), ("a", ACK), ("u", GOAL), ("a", S1), ("u", ""), ("a", S2)), -1),
                   3: (m(("s", SYS), ("u", INSTR), ("a", ACK), ("u", GOAL), ("a", S1), ("u", O1), ("a", S2),
                         ("u", ""), ("a", S3)), -1)}},
    "plain": {"prompt_only": {0: (m(("u", T0), ("a", P0)), -1), 1: (m(("u", T0), ("a", P1)), -1)},
              "no_obs": {1: (m(("u", T0), ("a", P0), ("u", ""), ("a", P1)), -1)}},
}


def test_scores_on_agentgym_layout_match_transformers_on_hand_written_variants(hf_dir, tokenizer_dir, tokenizer,
                                                                              torch_model, tmp_path):
    def record(item_id, messages):
        conv = [{"from": {"system": "system", "user": "human", "assistant": "gpt"}[x["role"]], "value": x["content"],
                 "loss": False if x["content"] == ACK else None} for x in messages]
        return {"item_id": item_id, "conversations": conv}

    data = write_jsonl(tmp_path / "t.jsonl", [record("gym", GYM), record("plain", PLAIN)])
    out = tmp_path / "scores.jsonl"
    assert main(["score", "--model", hf_dir, "--tokenizer", tokenizer_dir, "--data", data, "--out", str(out),
                 "--seq-len", "512", "--chunk", "64", "--batch-size", "8", "--dtype", "float32"]) == 0
    scores = read_scores(out)
    for item_id, messages in (("gym", GYM), ("plain", PLAIN)):
        steps = scores[item_id]["steps"]
        full = _reference(torch_model, tokenizer, [(messages, k) for k in range(len(steps))])
        for k, got in enumerate(steps):
            nll_sum, nll_mean, entropy_mean, tokens = full[k]
            assert got["tokens"] == tokens and got["truncated"] is False
            np.testing.assert_allclose([got["nll_sum"], got["nll_mean"], got["entropy_mean"]],
                                       [nll_sum, nll_mean, entropy_mean], rtol=2e-5, atol=1e-5)
            for variant, key, derived in (("prompt_only", "nll_mean_prompt_only", "ifd"),
                                          ("no_obs", "nll_mean_no_obs", "obs_dependence")):
                request = EXPECTED[item_id][variant].get(k)
                if request is None:  # the acknowledgement; the first trainable step has no observation
                    assert got[key] is None and got[derived] is None, (item_id, k, variant)
                    continue
                alt = _reference(torch_model, tokenizer, [request])[0][1]
                np.testing.assert_allclose(got[key], alt, rtol=2e-5, atol=1e-5)
                want = nll_mean / alt if variant == "prompt_only" else alt - nll_mean
                np.testing.assert_allclose(got[derived], want, rtol=1e-3, atol=2e-5)
    assert scores["gym"]["steps"][1]["ifd"] == pytest.approx(1.0, abs=1e-5)  # its history is its task context


def test_scores_match_transformers_on_the_corpus(scores, torch_model, tokenizer, traj_file):
    """Every step of the corpus (both layouts): full-history metrics against transformers."""
    from atlas_jax.data.trajectory import read_trajectories

    trajectories, _ = read_trajectories(traj_file)
    assert set(scores) == {t.item_id for t in trajectories}
    for traj in trajectories:
        steps = scores[traj.item_id]["steps"]
        ref = _reference(torch_model, tokenizer, [(traj.messages(), k) for k in range(len(steps))])
        for k, got in enumerate(steps):
            np.testing.assert_allclose([got["nll_sum"], got["nll_mean"], got["entropy_mean"]], ref[k][:3],
                                       rtol=2e-5, atol=1e-5)
            assert got["tokens"] == ref[k][3] and got["truncated"] is False
            trainable = traj.step_turns[k].loss is not False
            assert (got["ifd"] is not None) == trainable  # no counterfactual for the acknowledgement


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
    assert rc == 2
