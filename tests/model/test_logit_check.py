"""benchmarks/logit_check.py: passes on a tiny faithful model; its metrics match hand-computed
values on a known difference (so the checker can fail)."""
from __future__ import annotations

import numpy as np

from benchmarks import logit_check


def test_logit_check_passes_on_matching_model(hf_dirs, capsys):
    assert logit_check.main(["--model", str(hf_dirs["mistral"]), "--seq-len", "8", "--batch", "1"]) == 0
    assert "argmax agreement 100.00%" in capsys.readouterr().out


def test_compare_detects_a_difference():
    reference = np.zeros((1, 2, 4), np.float32)
    ours = reference.copy()
    ours[0, 1, 2] = 1.0
    diff, kl = logit_check.compare(reference, ours)
    np.testing.assert_allclose(diff, [[0.0, 1.0]])
    p, q = np.full(4, 0.25), np.exp([0, 0, 1, 0]) / np.exp([0, 0, 1, 0]).sum()
    np.testing.assert_allclose(kl[0, 1], (p * np.log(p / q)).sum(), rtol=1e-9)
    assert kl[0, 0] == 0
