"""`atlas-jax score` over several processes: two local JAX processes write the same scores file as one
process, in input order; a killed run's finished parts are reused, never scored twice.

Floats are compared to 1e-5 relative (1e-4 nats absolute, for obs_dependence, a difference of two
means), not bytewise: a trajectory's sequences are packed into other rows (next to other trajectories,
at other offsets) when a process holds another subset, and the one-process reference runs sharded over
8 devices, so float32 reductions add the same terms in another order (measured: the files differ, by
at most 7.6e-6 relative). Everything else (order, ids, token counts, nulls, truncation flags, the
scorer) must be identical."""
from __future__ import annotations

import json
import math

import pytest

from atlas_jax.cli import main
from atlas_jax.multihost_split import balanced_shares
from tests.multiprocess_cli import run_cli_processes
from tests.selection.conftest import agenttraj, corpus, write_jsonl


def test_balanced_shares_by_hand():
    # most expensive first to the least loaded process: 9 -> p0, 7 -> p1, 5 -> p1 (7 < 9), 3 -> p0 (9 < 12),
    # 1 -> p0 (12 = 12: the lower process); each share in input order
    assert balanced_shares([1, 9, 5, 7, 3], 2) == [[0, 1, 4], [2, 3]]
    # without position 1: 7 -> p0, 5 -> p1, 3 -> p1 (5 < 7), 1 -> p0 (7 < 8)
    assert balanced_shares([1, 9, 5, 7, 3], 2, skip={1}) == [[0, 3], [2, 4]]
    assert balanced_shares([2, 2], 3) == [[0], [1], []]


def lines(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def assert_same_scores(got, want):
    assert [r["item_id"] for r in got] == [r["item_id"] for r in want]
    for g, w in zip(got, want):
        assert g["scorer"] == w["scorer"] and g["num_steps"] == w["num_steps"]
        for gs, ws in zip(g["steps"], w["steps"], strict=True):
            assert gs.keys() == ws.keys()
            for key, value in ws.items():
                if isinstance(value, float):
                    assert math.isclose(gs[key], value, rel_tol=1e-5, abs_tol=1e-4), (g["item_id"], key)
                else:
                    assert gs[key] == value, (g["item_id"], key)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # lengths differ, so the balanced split interleaves them (not halves of the file)
    extra = [agenttraj(f"long_{i}", [f"Thought: look {s} times. Action: go {s}" for s in range(6 - i)],
                       task=f"Task long {i}: find the box.") for i in range(3)]
    return write_jsonl(tmp_path_factory.mktemp("mh") / "traj.jsonl", corpus() + extra)


def score_argv(hf_dir, tokenizer_dir, data, out, *extra):
    return ["score", "--model", hf_dir, "--tokenizer", tokenizer_dir, "--data", data, "--out", str(out),
            "--seq-len", "256", "--chunk", "64", "--batch-size", "8", "--dtype", "float32", *extra]


@pytest.fixture(scope="module")
def one_process(hf_dir, tokenizer_dir, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "scores.jsonl"
    assert main(score_argv(hf_dir, tokenizer_dir, data, out)) == 0
    return lines(out)


def test_two_processes_write_the_one_process_file(hf_dir, tokenizer_dir, data, one_process, tmp_path):
    out = tmp_path / "scores.jsonl"
    stdout = run_cli_processes(score_argv(hf_dir, tokenizer_dir, data, out), count=2)
    assert "process 0 of 2: 4 trajectories to score" in stdout[0]  # 8 trajectories, balanced by length
    assert "process 1 of 2: 4 trajectories to score" in stdout[1]
    assert "wrote 8 records" in stdout[0] and "wrote" not in stdout[1]
    assert_same_scores(lines(out), one_process)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.jsonl"]  # parts merged and removed


def test_a_killed_run_keeps_its_parts_and_the_rerun_scores_only_the_rest(
        hf_dir, tokenizer_dir, data, one_process, tmp_path, monkeypatch, capsys):
    import atlas_jax.selection.score_pass as score_pass

    out = tmp_path / "scores.jsonl"
    real = score_pass.score_trajectories
    calls, kill = [], True

    def dies_on_the_second_part(trajectories, *args, **kwargs):
        calls.append([t.item_id for t in trajectories])
        if len(calls) == 2 and kill:
            raise KeyboardInterrupt  # as a kill would
        return real(trajectories, *args, **kwargs)

    monkeypatch.setattr(score_pass, "score_trajectories", dies_on_the_second_part)
    with pytest.raises(KeyboardInterrupt):
        main(score_argv(hf_dir, tokenizer_dir, data, out, "--part-size", "5"))
    assert not out.exists()
    assert len(list((tmp_path / "scores.jsonl.parts").glob("part-*.jsonl"))) == 1
    # the same run with other options is refused, naming what differs
    assert main(score_argv(hf_dir, tokenizer_dir, data, out, "--seq-len", "128")) == 2  # a user error: one line, exit 2
    assert "differs in seq_len" in capsys.readouterr().err
    calls.clear()
    kill = False
    assert main(score_argv(hf_dir, tokenizer_dir, data, out, "--part-size", "5")) == 0
    assert "3 trajectories to score (5 finished by an earlier run)" in capsys.readouterr().out
    assert calls == [["long_0", "long_1", "long_2"]]  # the first part's trajectories were not scored again
    assert_same_scores(lines(out), one_process)
    assert not (tmp_path / "scores.jsonl.parts").exists()
