"""Selector semantics against hand-computed answers: caps, determinism, complements, scores, budgets."""
from __future__ import annotations

import json

import numpy as np
import pytest

from atlas_jax.cli import main
from atlas_jax.data.mask import MaskEntry, read_mask
from atlas_jax.data.trajectory import parse_record
from atlas_jax.selection import selectors as S
from tests.selection.conftest import agenttraj, write_jsonl


def traj(item_id: str, n: int):
    return parse_record(agenttraj(item_id, [f"Action: a{k}" for k in range(n)], task=f"Task {item_id}: x"), "t:1")


def scores_record(item_id: str, **metrics) -> dict:
    n = len(next(iter(metrics.values())))
    steps = [{"index": k, "tokens": 10, **{m: v[k] for m, v in metrics.items()}} for k in range(n)]
    return {"item_id": item_id, "num_steps": n, "steps": steps, "source": "s:1"}


@pytest.mark.parametrize("n,ratio,cap", [(10, 0.3, 3), (7, 0.3, 2), (2, 0.3, 1), (1, 0.3, 1), (10, 1.0, 10),
                                         (3, 0.5, 1), (4, 0.5, 2)])
def test_step_cap(n, ratio, cap):
    assert S.step_cap(n, ratio) == cap


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5])
def test_step_cap_rejects_bad_ratio(ratio):
    with pytest.raises(ValueError, match="ratio"):
        S.step_cap(5, ratio)


def test_random_is_seeded_per_item_and_capped():
    trajs = [traj(f"t{i}", 10) for i in range(6)]
    first = [S.select_random(t, 0.3, seed=1).ranked for t in trajs]
    again = [S.select_random(t, 0.3, seed=1).ranked for t in reversed(trajs)][::-1]
    assert first == again  # independent of order and of the other trajectories
    assert all(len(r) == 3 and len(set(r)) == 3 and all(0 <= k < 10 for k in r) for r in first)
    other = [S.select_random(t, 0.3, seed=2).ranked for t in trajs]
    assert first != other
    # over many items every step gets picked: it is not a fixed prefix
    picked = {k for i in range(50) for k in S.select_random(traj(f"u{i}", 10), 0.3, 0).ranked}
    assert picked == set(range(10))


def test_noncritical_is_a_capped_seeded_complement():
    t = traj("a", 10)
    reference = MaskEntry("a", 10, (0, 3, 4), source="m:1")
    sel = S.select_noncritical(t, 0.3, 0, reference)
    assert len(sel.ranked) == 3 and not set(sel.ranked) & {0, 3, 4}
    assert sel.ranked == S.select_noncritical(t, 0.3, 0, reference).ranked
    # fewer non-critical steps than the cap: all of them
    assert sorted(S.select_noncritical(t, 0.5, 0, MaskEntry("a", 10, tuple(range(8)))).ranked) == [8, 9]
    assert S.select_noncritical(traj("b", 2), 0.5, 0, MaskEntry("b", 2, (0, 1))).ranked == []


def test_perplexity_takes_the_highest_nll_and_puts_missing_last():
    t = traj("a", 5)
    values = S.metric_values(scores_record("a", nll_mean=[1.0, 3.0, 2.0, None, 2.5]), "nll_mean")
    assert S.select_top(t, 0.4, values).ranked == [1, 4]
    assert S.select_top(t, 1.0, values).ranked == [1, 4, 2, 0, 3]


def test_score_combination_is_a_weighted_sum_of_z_scores():
    rec = scores_record("a", obs_dependence=[None, 1.0, 3.0], ifd=[0.5, 1.0, 1.5])
    got = S.combined_scores(rec, S.parse_combine("obs_dependence=2,ifd=-1"))
    # obs: mean 2, std 1 -> z [0 (missing), -1, 1]; ifd: mean 1, std sqrt(1/6) -> z [-sqrt(1.5), 0, sqrt(1.5)]
    z = np.sqrt(1.5)
    np.testing.assert_allclose(got, [z, -2.0, 2.0 - z])
    assert S.select_top(traj("a", 3), 0.34, got).ranked == [0]  # sqrt(1.5) = 1.22 > 2 - 1.22
    with pytest.raises(ValueError, match="unknown metric"):
        S.parse_combine("loss=1")
    with pytest.raises(ValueError, match="no 'ifd'"):
        S.combined_scores(scores_record("a", nll_mean=[1.0, 2.0]), {"ifd": 1.0})


def test_token_budget_keeps_one_step_each_then_goes_rank_by_rank():
    sels = [S.Selection("a", 4, [2, 0, 1]), S.Selection("b", 3, [1, 2]), S.Selection("c", 2, [0])]
    tokens = {"a": [5, 7, 10, 1], "b": [3, 4, 6], "c": [8, 1]}
    # rank 0: a2=10, b1=4, c0=8 -> 22; rank 1: a0=5 -> 27, b2=6 -> 33 > 30 (b stops); rank 2: a1=7 -> 34 > 30
    report = S.apply_token_budget(sels, tokens, budget=30)
    assert [s.ranked for s in sels] == [[2, 0], [1], [0]]
    assert (report.tokens_after, report.steps_after, report.steps_before) == (27, 4, 6)
    with pytest.raises(ValueError, match="below the 22 tokens"):
        S.apply_token_budget([S.Selection("a", 4, [2]), S.Selection("b", 3, [1]), S.Selection("c", 2, [0])],
                             tokens, budget=21)


def test_select_cli_writes_masks_training_reads(tmp_path, capsys):
    data = write_jsonl(tmp_path / "t.jsonl", [agenttraj(f"t{i}", [f"Action: a{k}" for k in range(4 + i)],
                                                        task=f"Task t{i}: x") for i in range(3)])
    scores = write_jsonl(tmp_path / "s.jsonl", [
        {k: v for k, v in scores_record(f"t{i}", nll_mean=[float((k * 7 + i) % 5) for k in range(4 + i)]).items()
         if k != "source"} for i in range(3)])
    out = {name: tmp_path / f"{name}.jsonl" for name in ("all", "random", "perplexity", "noncritical")}
    assert main(["select", "--selector", "all", "--data", data, "--out", str(out["all"])]) == 0
    assert main(["select", "--selector", "random", "--ratio", "0.5", "--seed", "3", "--data", data,
                 "--out", str(out["random"])]) == 0
    assert main(["select", "--selector", "perplexity", "--ratio", "0.5", "--data", data, "--scores", scores,
                 "--out", str(out["perplexity"])]) == 0
    assert main(["select", "--selector", "noncritical", "--ratio", "0.5", "--data", data, "--mask",
                 str(out["perplexity"]), "--out", str(out["noncritical"])]) == 0
    printed = capsys.readouterr().out
    assert "read 3, used 3" in printed and "steps critical" in printed
    masks = {name: read_mask(path) for name, path in out.items()}
    assert [masks["all"][f"t{i}"].critical for i in range(3)] == [(0, 1, 2, 3), (0, 1, 2, 3, 4), tuple(range(6))]
    assert [len(masks["random"][f"t{i}"].critical) for i in range(3)] == [2, 2, 3]
    # t0: nll_mean [0, 2, 4, 1] -> top 2 = steps 2, 1
    assert masks["perplexity"]["t0"].critical == (1, 2)
    for i in range(3):
        assert not set(masks["noncritical"][f"t{i}"].critical) & set(masks["perplexity"][f"t{i}"].critical)
    line = json.loads(open(out["perplexity"]).readline())
    assert line["selector"] == {"name": "perplexity", "ratio": 0.5, "metric": "nll_mean", "model": None,
                                "unscored_steps": 0, "chosen_without_score": 0}
    # a global budget of 10 tokens a step: only one step per trajectory survives 35 tokens
    assert main(["select", "--selector", "random", "--ratio", "0.5", "--data", data, "--scores", scores,
                 "--token-budget", "35", "--out", str(tmp_path / "b.jsonl")]) == 0
    assert [len(e.critical) for e in read_mask(tmp_path / "b.jsonl").values()] == [1, 1, 1]
    assert main(["select", "--selector", "score", "--data", data, "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "needs --scores" in capsys.readouterr().err


def gym(item_id: str, n: int):
    """AgentGym's layout: step 0 the acknowledgement (loss false), steps 1..n the agent's."""
    return parse_record(agenttraj(item_id, [f"Action: a{k}" for k in range(1, n + 1)], task=f"Your goal: {item_id}",
                                  instruction="Every round you get an observation."), "g:1")


def test_loss_false_turns_are_never_candidates():
    """AgentGym's acknowledgement turn ("OK. I'll follow your instructions", loss false) is not a step
    any selector may call critical; the cap counts trainable steps only."""
    record = {"item_id": "ack", "conversations": [
        {"from": "human", "value": "instructions", "loss": None},
        {"from": "gpt", "value": "OK. I'll follow your instructions.", "loss": False},
        {"from": "human", "value": "obs 0"}, {"from": "gpt", "value": "Thought: a\nAction: x", "loss": True},
        {"from": "human", "value": "obs 1"}, {"from": "gpt", "value": "Thought: b\nAction: y", "loss": True}]}
    t = parse_record(record, "test:1")
    assert S.candidate_steps(t) == [1, 2]
    for seed in range(20):
        assert 0 not in S.select_random(t, 1.0, seed).ranked
    assert S.select_top(t, 1.0, [9.0, 1.0, 2.0]).ranked == [2, 1]  # step 0 has the top value but is excluded
    reference = MaskEntry("ack", 3, (2,), None, "ref:1")
    assert S.select_noncritical(t, 1.0, 0, reference).ranked == [1]
    assert S.select_all(t).ranked == [1, 2]


@pytest.mark.parametrize("n,ratio,cap", [(10, 0.3, 3), (3, 0.3, 1), (6, 0.5, 3), (1, 0.3, 1)])
def test_cap_is_computed_on_trainable_steps(n, ratio, cap):
    """n trainable steps + the acknowledgement: the cap is floor(ratio * n), not floor(ratio * (n + 1))."""
    t = gym("g", n)
    assert t.num_steps == n + 1 and S.trajectory_cap(t, ratio) == cap
    assert len(S.select_random(t, ratio, 0).ranked) == cap
    assert len(S.select_top(t, ratio, [float(k) for k in range(n + 1)]).ranked) == cap
    assert S.select_top(t, ratio, [100.0] + [0.0] * n).ranked[0] == 1  # the ack's top value is ignored
    ranked = S.select_top(t, 1.0, [None] + [float(k) for k in range(1, n + 1)]).ranked
    assert ranked == list(range(n, 0, -1))


def test_score_z_scores_ignore_the_acknowledgement():
    # nll of the ack would dominate the mean/std; z over steps 1-3 only: [_, -1.2247, 0, 1.2247]
    rec = scores_record("g", nll_mean=[50.0, 1.0, 2.0, 3.0])
    got = S.combined_scores(rec, {"nll_mean": 1.0}, steps=(1, 2, 3))
    assert got[0] is None
    np.testing.assert_allclose(got[1:], [-np.sqrt(1.5), 0.0, np.sqrt(1.5)])


def test_select_cli_on_agentgym_layout_never_writes_the_acknowledgement(tmp_path):
    data = write_jsonl(tmp_path / "g.jsonl", [agenttraj(f"g{i}", [f"Action: a{k}" for k in range(1, 5 + i)],
                                                        task=f"Your goal: g{i}", instruction="Act.")
                                              for i in range(3)])  # 4, 5, 6 trainable steps
    scores = write_jsonl(tmp_path / "s.jsonl", [  # the acknowledgement has the highest nll and obs_dependence
        {k: v for k, v in scores_record(f"g{i}", nll_mean=[9.0] + [float(k) for k in range(1, 5 + i)],
                                        obs_dependence=[9.0] + [float(-k) for k in range(1, 5 + i)]).items()
         if k != "source"} for i in range(3)])
    for selector, extra in (("all", []), ("random", []), ("perplexity", ["--scores", scores]),
                            ("score", ["--scores", scores, "--combine", "obs_dependence=1"])):
        out = tmp_path / f"{selector}.jsonl"
        assert main(["select", "--selector", selector, "--ratio", "0.5", "--data", data, "--out", str(out)]
                    + extra) == 0
        mask = read_mask(out)
        assert [mask[f"g{i}"].num_steps for i in range(3)] == [5, 6, 7]
        assert all(0 not in e.critical for e in mask.values()), selector
        if selector != "all":  # floor(0.5 * trainable): 2, 2, 3
            assert [len(mask[f"g{i}"].critical) for i in range(3)] == [2, 2, 3], selector
    assert read_mask(tmp_path / "all.jsonl")["g0"].critical == (1, 2, 3, 4)
    assert read_mask(tmp_path / "perplexity.jsonl")["g0"].critical == (3, 4)  # highest nll among steps 1-4
    assert read_mask(tmp_path / "score.jsonl")["g0"].critical == (1, 2)  # highest obs_dependence among 1-4


def test_select_says_when_steps_lack_scores_and_refuses_a_blind_mask(tmp_path, capsys):
    """The demo's failure: `score --seq-len` cut most steps, so `select` ranked them by index."""
    data = write_jsonl(tmp_path / "t.jsonl", [agenttraj(f"t{i}", [f"Action: a{k}" for k in range(10)],
                                                        task=f"Task t{i}: x") for i in range(2)])
    cut = [1.0, 2.0] + [None] * 8  # only the first two steps fit the scoring window
    scores = write_jsonl(tmp_path / "s.jsonl", [
        {k: v for k, v in scores_record(f"t{i}", nll_mean=cut).items() if k != "source"} for i in range(2)])
    out = tmp_path / "m.jsonl"
    args = ["select", "--selector", "perplexity", "--ratio", "0.3", "--data", data, "--scores", scores,
            "--out", str(out)]
    # cap floor(0.3 x 10) = 3 per trajectory: 2 scored + 1 unscored each -> 2 of 6 blind: written, with a warning
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "16/20 trainable steps have no score" in err and "2/6 chosen steps were picked without one" in err
    assert json.loads(out.read_text().splitlines()[0])["selector"]["chosen_without_score"] == 2
    # ratio 0.8: cap 8, 6 of them unscored -> most of the mask rests on no score: refused, nothing written
    out.unlink()
    assert main(args[:4] + ["0.8"] + args[5:]) == 2
    err = capsys.readouterr().err
    assert "12 of 16 chosen steps have no score" in err and "--allow-unscored" in err and not out.exists()
    assert main(args[:4] + ["0.8"] + args[5:] + ["--allow-unscored"]) == 0 and out.exists()
