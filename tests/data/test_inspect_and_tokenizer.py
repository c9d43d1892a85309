"""`atlas-jax inspect` output, and the tiny tokenizer's format."""
import json

import numpy as np

from atlas_jax.cli import main
from atlas_jax.data.chat_templates import strip_generation_markers
from atlas_jax.data.tiny_tokenizer import SPECIAL_TOKENS
from tests.data.conftest import write_jsonl


def test_inspect_json_marks_exactly_the_critical_steps(tmp_path, corpus_file, tokenizer_dirs, tokenizer, capsys):
    mask = write_jsonl(tmp_path / "mask.jsonl", [{"item_id": "traj_3", "num_steps": 4, "critical": [0, 2],
                                                  "weights": [1.0, 0.25]}])
    out = tmp_path / "tokens.jsonl"
    rc = main(["inspect", "--data", corpus_file, "--tokenizer", tokenizer_dirs["unmarked"], "--mask", mask,
               "--item", "traj_3", "--json", str(out), "--keep-tail", "--color", "always"])
    assert rc == 0
    (rec,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert rec["item_id"] == "traj_3" and rec["trained"] and rec["num_steps"] == 4
    ref = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Task 3: reach the goal."}]
        + sum(([{"role": "assistant", "content": f"Thought: plan 3.{s}. Action: move {s}"},
                {"role": "user", "content": f"Observation: you see wall {s}."}] for s in range(3)), [])
        + [{"role": "assistant", "content": "Thought: plan 3.3. Action: move 3"}],
        tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert rec["token_ids"] == ref["input_ids"]
    assert len(rec["tokens"]) == len(rec["step"]) == len(rec["weight"]) == len(ref["input_ids"])
    mask_ref = np.asarray(ref["assistant_masks"], bool)
    np.testing.assert_array_equal(np.asarray(rec["step"]) >= 0, mask_ref)
    weights = np.asarray(rec["weight"])
    steps = np.asarray(rec["step"])
    assert set(weights[steps == 0]) == {1.0} and set(weights[steps == 2]) == {0.25}
    assert set(weights[(steps == 1) | (steps == 3) | (steps == -1)]) == {0.0}
    assert "".join(np.asarray(rec["tokens"])[steps == 2]) == "Thought: plan 3.2. Action: move 2<|eot_id|>"
    printed = capsys.readouterr().out
    assert "=== traj_3" in printed and "[step 2 w=0.25]" in printed and "\x1b[42;30m" in printed
    assert "read 12, used 12, rejected 0" in printed


def test_inspect_reports_bad_mask_as_one_line(tmp_path, corpus_file, tokenizer_dirs, capsys):
    mask = write_jsonl(tmp_path / "mask.jsonl", [{"item_id": "traj_3", "num_steps": 4, "critical": [4]}])
    assert main(["inspect", "--data", corpus_file, "--tokenizer", tokenizer_dirs["marked"], "--mask", mask]) == 2
    err = capsys.readouterr().err
    assert "mask.jsonl:1 item_id='traj_3': critical step index 4 out of range for 4 steps" in err


def test_tiny_tokenizer_format(tokenizer, unmarked_tokenizer):
    assert len(tokenizer) == 512
    for tok in SPECIAL_TOKENS:  # control tokens are single ids and never split
        ids = tokenizer.encode(f"a{tok}b", add_special_tokens=False)
        assert tokenizer.convert_tokens_to_ids(tok) in ids
    assert tokenizer.bos_token == "<|begin_of_text|>" and tokenizer.eos_token == "<|eot_id|>"
    text = "Thought: ünïcode ✓ and bytes\n\tAction: go"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    assert "{% generation %}" in tokenizer.chat_template
    assert unmarked_tokenizer.chat_template == strip_generation_markers(tokenizer.chat_template)
    assert "{% generation %}" not in unmarked_tokenizer.chat_template and "endgeneration" not in unmarked_tokenizer.chat_template
    messages = [{"role": "user", "content": "Go"}, {"role": "assistant", "content": "Action: go"}]
    expected = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nGo<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\nAction: go<|eot_id|>")
    assert tokenizer.apply_chat_template(messages, tokenize=False) == expected
    assert unmarked_tokenizer.apply_chat_template(messages, tokenize=False) == expected


def test_inspect_shows_skipped_trajectories_with_zero_weight(tmp_path, corpus_file, tokenizer_dirs):
    mask = write_jsonl(tmp_path / "mask.jsonl", [{"item_id": "traj_3", "num_steps": 4, "critical": [1]}])
    out = tmp_path / "tokens.jsonl"
    assert main(["inspect", "--data", corpus_file, "--tokenizer", tokenizer_dirs["marked"], "--mask", mask,
                 "--unmasked", "skip", "--json", str(out), "--color", "never"]) == 0
    recs = {r["item_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert len(recs) == 12 and [i for i, r in recs.items() if r["trained"]] == ["traj_3"]
    assert all(max(r["weight"]) == 0 and max(r["step"]) >= 0 for i, r in recs.items() if i != "traj_3")


def test_inspect_shows_task_context_acknowledgement_and_trainable_steps(tmp_path, tokenizer_dirs, capsys):
    """traj_2 of the corpus, AgentGym's layout: instruction, acknowledgement (step 0), goal, steps 1-3."""
    from tests.data.conftest import corpus
    data = write_jsonl(tmp_path / "t.jsonl", corpus(3))
    mask = write_jsonl(tmp_path / "mask.jsonl", [{"item_id": "traj_2", "num_steps": 4, "critical": [2]}])
    out = tmp_path / "tokens.jsonl"
    assert main(["inspect", "--data", data, "--tokenizer", tokenizer_dirs["unmarked"], "--mask", mask,
                 "--item", "traj_2", "--json", str(out), "--color", "never"]) == 0
    printed = capsys.readouterr().out
    assert "=== traj_2" in printed and "4 steps (3 trainable: [1, 2, 3]), weighted steps [2]" in printed
    lines = printed.splitlines()
    start = lines.index("task context (turns 0-2, everything before the first trainable step):")
    assert lines[start + 1] == "  [instruction] Act in the world."
    assert lines[start + 2].startswith("  step 0 (acknowledgement, loss false: context, never trained or selected; ")
    assert lines[start + 3] == "  [task] Task 2: reach the goal."
    assert lines[start + 4] == "steps:"
    assert lines[start + 5].startswith("  step 1 (trainable, weight 0; ")
    assert lines[start + 7].startswith("  step 2 (trainable, weight 1; ")
    assert "[step 0 context]OK. I'll follow" in printed and "[step 2 w=1]«Thought" in printed
    (rec,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert rec["trainable_steps"] == [1, 2, 3]
    assert [(t["kind"], t.get("step"), t.get("trainable"), t["in_task_context"]) for t in rec["layout"]] == [
        ("instruction", None, None, True), ("acknowledgement", 0, False, True), ("task", None, None, True),
        ("step", 1, True, False), ("observation", None, None, False), ("step", 2, True, False),
        ("observation", None, None, False), ("step", 3, True, False)]


def test_corpus_trained_tokenizer_merges_phrases_and_still_encodes_anything(tmp_path):
    """tokenizer: trained (the CPU ablation): merges may span words, unseen text stays exact."""
    from transformers import AutoTokenizer

    from atlas_jax.data.tiny_tokenizer import PHRASE_CHARS, build_tiny_tokenizer

    corpus = [f"There is a red ball {i} 2 steps to your left. Action:\nturn left" for i in range(50)]
    tok = AutoTokenizer.from_pretrained(build_tiny_tokenizer(tmp_path / "tok", vocab_size=400, corpus=corpus))
    pieces = tok.convert_ids_to_tokens(tok("There is a red ball 7 2 steps to your left.")["input_ids"])
    assert any(" " in tok.convert_tokens_to_string([p]).strip() for p in pieces)  # a token spans words
    assert max(len(tok.convert_tokens_to_string([p]).encode()) for p in pieces) <= PHRASE_CHARS
    assert len(pieces) <= 8  # 43 characters of corpus text; the byte-level corpus-free tokenizer needs ~20
    unseen = "Ünïcode ✓ and\ttabs {never seen}"
    assert tok.decode(tok(unseen)["input_ids"]) == unseen
    for special in SPECIAL_TOKENS:
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    assert len(tok) <= 400
