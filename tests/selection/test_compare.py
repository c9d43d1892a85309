"""compare-masks against hand-computed precision, recall, Jaccard and per-criterion agreement."""
from __future__ import annotations

import json

import pytest

from atlas_jax.cli import main
from atlas_jax.selection.compare import compare_files
from tests.selection.conftest import write_jsonl

A = [{"item_id": "x", "num_steps": 6, "critical": [0, 1, 2],
      "criteria": ["plan_creation", "critical_action", "critical_action"]},
     {"item_id": "y", "num_steps": 5, "critical": [3], "criteria": ["self_correction"]},
     {"item_id": "z", "num_steps": 2, "critical": [0]}]
B = [{"item_id": "x", "num_steps": 6, "critical": [1, 2, 4]},
     {"item_id": "y", "num_steps": 5, "critical": [0, 1]},
     {"item_id": "w", "num_steps": 3, "critical": [1]}]


def test_compare_masks_numbers(tmp_path):
    result = compare_files(write_jsonl(tmp_path / "a.jsonl", A), write_jsonl(tmp_path / "b.jsonl", B))
    x, y = result.per_item
    assert (x["precision"], x["recall"], x["jaccard"]) == pytest.approx((2 / 3, 2 / 3, 0.5))
    assert (y["precision"], y["recall"], y["jaccard"]) == (0.0, 0.0, 0.0)
    o = result.overall
    assert (o["steps_a"], o["steps_b"], o["steps_both"]) == (4, 5, 2)
    assert (o["precision"], o["recall"], o["jaccard"]) == pytest.approx((0.4, 0.5, 2 / 7))
    assert (o["macro_precision"], o["macro_recall"], o["macro_jaccard"]) == pytest.approx((1 / 3, 1 / 3, 0.25))
    assert result.per_criterion == {"critical_action": {"in_a": 2, "selected_by_b": 2, "recall": 1.0},
                                    "plan_creation": {"in_a": 1, "selected_by_b": 0, "recall": 0.0},
                                    "self_correction": {"in_a": 1, "selected_by_b": 0, "recall": 0.0}}
    assert (result.only_in_a, result.only_in_b) == (["z"], ["w"])
    # B with criteria of its own: how often the shared steps carry the same one
    b2 = [dict(B[0], criteria=["critical_action", "plan_creation", "critical_action"])]
    same = compare_files(tmp_path / "a.jsonl", write_jsonl(tmp_path / "b2.jsonl", b2)).per_criterion
    assert same["critical_action"]["same_criterion"] == 1 and same["critical_action"]["same_criterion_rate"] == 0.5


def test_compare_cli_and_mismatched_steps(tmp_path, capsys):
    a, b = write_jsonl(tmp_path / "a.jsonl", A), write_jsonl(tmp_path / "b.jsonl", B)
    assert main(["compare-masks", a, b, "--per-item", "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "precision 0.400  recall 0.500  jaccard 0.286" in out and "1 only in A, 1 only in B" in out
    assert json.load(open(tmp_path / "c.json"))["overall"]["steps_both"] == 2
    bad = write_jsonl(tmp_path / "bad.jsonl", [dict(B[0], num_steps=7)])
    assert main(["compare-masks", a, bad]) == 2
    assert "item_id='x': num_steps 6" in capsys.readouterr().err
