"""Readers: the three formats into one trajectory type, and every bad-input case with file/line/item_id."""
import json

import pytest

from atlas_jax.data.trajectory import TrajectoryError, read_trajectories
from atlas_jax.data.trajectory import parse_record
from tests.data.conftest import ACK, agenttraj, write_jsonl


def test_three_formats_read_to_the_same_trajectory(tmp_path):
    agent = agenttraj("a", ["Action: look", "Action: done"], ["Observation: wall"], losses=[None, True])
    sharegpt = {"id": "b", "conversations": [{"from": "human", "value": "Go to the red key."},
                                             {"from": "gpt", "value": "Action: look"},
                                             {"from": "human", "value": "Observation: wall"},
                                             {"from": "gpt", "value": "Action: done"}]}
    openai = {"item_id": "c", "messages": [{"role": "user", "content": "Go to the red key."},
                                           {"role": "assistant", "content": "Action: look"},
                                           {"role": "user", "content": "Observation: wall"},
                                           {"role": "assistant", "content": "Action: done"}]}
    path = write_jsonl(tmp_path / "mixed.jsonl", [agent, sharegpt, openai])
    json_path = tmp_path / "list.json"
    json_path.write_text(json.dumps([dict(openai, item_id="d")]))
    trajs, report = read_trajectories([path, str(json_path)])
    assert [t.item_id for t in trajs] == ["a", "b", "c", "d"]
    assert (report.read, report.used, sum(report.rejected.values())) == (4, 4, 0)
    for t in trajs:
        assert t.messages() == openai["messages"]
        assert t.num_steps == 2 and t.trainable_steps == (0, 1) and t.context_end == 1
        assert t.task_prompt == "Go to the red key."
        assert t.observations == ("Observation: wall",)
        assert [s.content for s in t.step_turns] == ["Action: look", "Action: done"]
        assert t.observation_turn(0) is None and t.observation_turn(1) == 2
    assert [s.loss for s in trajs[0].step_turns] == [None, True]
    assert trajs[1].source == f"{path}:2"


def test_agentgym_layout_task_context_and_trainable_steps():
    """turn 0 system, 1 instruction, 2 acknowledgement (step 0, loss false), 3 goal, 4 step 1, 5 obs, 6 step 2."""
    record = agenttraj("g", ["Action: look", "Action: done"], ["Observation: wall"], task="Your goal: red key",
                       system="You are an agent.", instruction="Every round I give you an observation.")
    t = parse_record(record, "mem:1")
    assert t.num_steps == 3 and t.trainable_steps == (1, 2) and t.step_turn_indices == (2, 4, 6)
    assert t.context_end == 4
    assert [x.content for x in t.task_context] == ["You are an agent.", "Every round I give you an observation.",
                                                   ACK, "Your goal: red key"]
    assert t.task_prompt == "Your goal: red key" and t.observations == ("Observation: wall",)
    assert t.observation_turn(1) is None  # the turn before the first trainable step is the goal, not an observation
    assert t.observation_turn(2) == 5


GOOD = agenttraj("ok", ["Action: look"])
BAD_CASES = {
    "bad JSON": ('{"item_id": "x", "conversations": [', "invalid JSON", None),
    "unknown role": ({"item_id": "r", "conversations": [{"from": "human", "value": "t"},
                                                       {"from": "robot", "value": "a"}]}, "robot", "r"),
    "empty conversation": ({"item_id": "e", "conversations": []}, "non-empty", "e"),
    "two assistant turns in a row": ({"item_id": "g", "conversations": [
        {"from": "human", "value": "t"}, {"from": "gpt", "value": "a"}, {"from": "gpt", "value": "b"}]},
        "both assistant turns", "g"),
    "duplicate item_id": (GOOD, "already used at", "ok"),
    "missing item_id": ({"conversations": GOOD["conversations"]}, "no 'item_id'", None),
    "no assistant turn": ({"item_id": "n", "messages": [{"role": "user", "content": "t"}]}, "no assistant", "n"),
    "no trainable step": ({"item_id": "k", "conversations": [{"from": "human", "value": "t"},
                                                            {"from": "gpt", "value": "OK.", "loss": False}]},
                          "every assistant turn is marked loss: false", "k"),
    "bad content": ({"item_id": "c", "messages": [{"role": "user", "content": "t"},
                                                 {"role": "assistant", "content": 3}]}, "must be a string", "c"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_names_file_line_and_item(tmp_path, case):
    record, what, item_id = BAD_CASES[case]
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, record])
    with pytest.raises(TrajectoryError) as err:
        read_trajectories(path)
    msg = str(err.value)
    assert f"{path}:2" in msg and what in msg
    if item_id is not None:
        assert f"item_id={item_id!r}" in msg


def test_skip_mode_counts_every_rejection_by_reason(tmp_path):
    records = [GOOD] + [BAD_CASES[c][0] for c in sorted(BAD_CASES)] + ["", agenttraj("ok2", ["Action: a"])]
    trajs, report = read_trajectories(write_jsonl(tmp_path / "bad.jsonl", records), on_error="skip")
    assert [t.item_id for t in trajs] == ["ok", "ok2"]
    assert report.read == 2 + len(BAD_CASES) and report.used == 2  # blank lines are not records
    assert sum(report.rejected.values()) == len(BAD_CASES)
    assert report.rejected["duplicate item_id"] == 1 and report.rejected["bad JSON"] == 1
    assert f"rejected {len(BAD_CASES)}" in report.summary()


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_trajectories(tmp_path / "nope.jsonl")
