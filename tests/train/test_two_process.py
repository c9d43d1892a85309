"""Two local processes (jax.distributed on 127.0.0.1, 2 CPU devices each) train together:
both see the same global loss at every step, and the loss falls."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from tests.train.conftest import base_overrides

WORKER = Path(__file__).with_name("two_process_train_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_agree_on_the_loss(train_assets, tmp_path):
    port = free_port()
    overrides = base_overrides(train_assets, tmp_path / "run")  # 6 steps, checkpoints at 2, 4, 6
    outs = [tmp_path / f"p{i}.json" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(port), str(i), str(outs[i]), *overrides],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    reports = [json.loads(o.read_text()) for o in outs]
    assert [r["process_index"] for r in reports] == [0, 1]
    assert all(r["process_count"] == 2 and r["devices"] == 4 for r in reports)
    assert reports[0]["losses"] == reports[1]["losses"]
    losses = [reports[0]["losses"][str(s)] for s in range(1, 7)]
    assert losses[-1] < losses[0], losses
    # only the first process writes metrics; both wrote the shared checkpoint
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 6
    assert (tmp_path / "run" / "checkpoints" / "6").is_dir()
