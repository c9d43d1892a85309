"""A tiny ablation end to end in child processes (one CPU device, as a user runs it): the first
run is SIGKILLed once row `all` is finished; the rerun does not redo it, finishes row `atlas`,
and the table's numbers equal those recomputed here from the per-episode eval files."""
from __future__ import annotations

import json
import math
import os
import resource
import signal
import subprocess
import sys
import time

import pytest

from tests.ablate.conftest import REPO, tiny_ablation


def ablate(config, *extra):
    return [sys.executable, "-m", "atlas_jax.cli", "ablate", "--config", str(config), *extra]


def wilson_by_hand(k, n):
    z = 1.959963984540054
    p = k / n
    denominator = 1 + z ** 2 / n
    centre = (p + z ** 2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z ** 2 / (4 * n ** 2))
    return max(0.0, centre - half), min(1.0, centre + half)


def test_killed_ablation_resumes_without_redoing_rows(tmp_path, child_env):
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    config = tiny_ablation(tmp_path)
    out = tmp_path / "out"
    done_all = out / "rows/all/seed_0/DONE.json"
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(ablate(config), cwd=REPO, env=child_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while not done_all.exists():
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.perf_counter() - start < 300, "row `all` did not finish in 300 s"
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGKILL)  # for real: no cleanup, between rows (or early in row atlas)
        first.wait()
    assert not (out / "rows/atlas/seed_0/DONE.json").exists(), "too late: row atlas finished before the kill"
    marker_before = done_all.read_bytes()
    metrics_before = (out / "rows/all/seed_0/train/metrics.jsonl").read_bytes()
    stamp = os.stat(done_all).st_mtime_ns

    second = subprocess.run(ablate(config, "--rows", "atlas,all"), cwd=REPO, env=child_env, capture_output=True, text=True)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "row all seed 0 already done" in second.stdout
    assert "base stage already done" in second.stdout
    assert "row atlas seed 0 done" in second.stdout
    assert done_all.read_bytes() == marker_before and os.stat(done_all).st_mtime_ns == stamp
    assert (out / "rows/all/seed_0/train/metrics.jsonl").read_bytes() == metrics_before  # not retrained
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = used.ru_utime + used.ru_stime - before.ru_utime - before.ru_stime
    print(f"tiny ablation, killed and resumed: {time.perf_counter() - start:.1f} s wall, {cpu:.1f} s CPU")
    # wall time depends on how busy the machine is; the work itself must fit a minute of CPU
    assert cpu < 60, f"the tiny ablation took {cpu:.0f} CPU seconds"
    for row in ("all", "atlas"):
        assert (out / f"rows/{row}/seed_0/mask.jsonl").is_file()

    table = json.loads((out / "table.json").read_text())
    assert [r["row"] for r in table["rows"]] == ["all", "atlas"]
    assert (out / "table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "table.md").read_text()
    for row in table["rows"]:
        marker = json.loads((out / f"rows/{row['row']}/seed_0/DONE.json").read_text())
        cost = marker["cost"]
        assert cost["steps"] > 0 and 0 < cost["trained_positions"] <= cost["tokens_processed"] <= \
            cost["padded_positions"] and cost["train_seconds"] > 0
        assert row["cost_mean_per_seed"]["trained_positions"] == cost["trained_positions"]
        for env, group in (("babyai", "held_in"), ("textcraft", "held_out")):
            lines = (out / f"rows/{row['row']}/seed_0/eval/{env}/{env}.jsonl").read_text().splitlines()
            k, n = sum(bool(json.loads(x)["success"]) for x in lines), len(lines)
            assert n == 2
            cell = row["cells"][env]
            low, high = wilson_by_hand(k, n)
            assert (cell["successes"], cell["episodes"], cell["group"]) == (k, n, group)
            assert (cell["rate"], cell["low"], cell["high"]) == pytest.approx((k / n, low, high), abs=1e-12)
            assert f"{100 * k / n:.1f} [{100 * low:.1f}, {100 * high:.1f}] (n=2)" in markdown
    # the same budget: the same epochs over the same trajectories, every batch of them trained on
    configs = [json.loads((out / f"rows/{r}/seed_0/train/config.json").read_text()) for r in ("all", "atlas")]
    assert [c["data"]["num_epochs"] for c in configs] == [1, 1]
    assert configs[0]["data"]["train_files"] == configs[1]["data"]["train_files"]
    for row in table["rows"]:
        metrics = (out / f"rows/{row['row']}/seed_0/train/metrics.jsonl").read_text().splitlines()
        last = max(json.loads(x).get("step", 0) for x in metrics)
        assert last == row["cost_mean_per_seed"]["steps"]
    # all trains every step, atlas at most 30% of each trajectory's steps (at least one)
    all_mask, atlas_mask = (table["rows"][i]["mask_mean_per_seed"] for i in (0, 1))
    assert all_mask["critical_steps"] == all_mask["steps"] > atlas_mask["critical_steps"]
    assert table["rows"][1]["cost_mean_per_seed"]["trained_positions"] < \
        table["rows"][0]["cost_mean_per_seed"]["trained_positions"]
