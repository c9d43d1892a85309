"""Two local processes (jax.distributed on 127.0.0.1, one CPU device each) against one process with
two devices, same global batch (data.shards=2) and seed: the same losses step for step and the same
checkpoint; a SIGTERM reaching one of the two processes stops both after the same step, saved
together; the checkpoint resumes on one process (2 -> 1), and one process's resumes on two (1 -> 2)."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from atlas_jax.train.trainer import train
from tests.train.conftest import base_overrides, run_config

WORKER = Path(__file__).with_name("two_process_train_worker.py")
STEPS = range(1, 7)
# the same global batch and the same float32 math, reduced across processes (gloo) instead of in one
# process: equal up to summation order
RTOL = 1e-5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_processes(overrides: list[str], tmp_path: Path, name: str, sigterm_at=(0, 0)) -> list[dict]:
    port = free_port()
    outs = [tmp_path / f"{name}{i}.json" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(port), str(i), "2", str(sigterm_at[i]), str(outs[i]),
                               *overrides], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        results = [p.communicate(timeout=900) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    reports = [json.loads(o.read_text()) for o in outs]
    assert [(r["process_index"], r["process_count"], r["devices"]) for r in reports] == [(0, 2, 2), (1, 2, 2)]
    return reports, results[0][1]


def params_at(run_dir: Path, step: int) -> dict:
    """The saved parameters of one step as host numpy arrays (whatever devices wrote them)."""
    path = (run_dir / "checkpoints" / str(step) / "params").absolute()
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path)
    tree = getattr(getattr(tree, "item_metadata", tree), "tree", tree)
    restored = checkpointer.restore(path, restore_args=jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree))
    return {"/".join(map(str, path)): np.asarray(leaf) for path, leaf in ocp.tree.to_flat_dict(restored).items()}


def steps_of(run_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


def test_two_processes_equal_one_and_agree_on_preemption(train_assets, tmp_path):
    common = ["data.shards=2", "train.keep_checkpoints=3"]  # checkpoints at 2, 4, 6, all kept
    # reference: one process, two devices, uninterrupted
    one = tmp_path / "one"
    reference = train(run_config(train_assets, one, *common, "mesh.num_devices=2")).losses
    assert sorted(reference) == list(STEPS) and reference[6] < reference[1]
    assert steps_of(one) == [2, 4, 6]

    # two processes x one device; process 1 alone receives SIGTERM while fetching its 2nd batch
    pre = tmp_path / "pre"
    reports, log0 = two_processes(base_overrides(train_assets, pre) + common, tmp_path, "pre", sigterm_at=(0, 2))
    assert [(r["status"], r["step"]) for r in reports] == [("preempted", 3)] * 2  # both stop after step 3
    assert "SIGTERM: saved step 3" in log0 and "the signal reached another process" in log0
    assert steps_of(pre) == [2, 3]  # step 3 saved by both, together
    for r in reports:
        assert sorted(map(int, r["losses"])) == [1, 2, 3]
        np.testing.assert_allclose([r["losses"][str(s)] for s in (1, 2, 3)], [reference[s] for s in (1, 2, 3)],
                                   rtol=RTOL)

    # 2 -> 1: the preempted two-process checkpoint resumes on one process and ends as the uninterrupted run
    resumed = train(run_config(train_assets, pre, *common, "mesh.num_devices=2"))
    assert resumed.status == "completed" and sorted(resumed.losses) == [4, 5, 6]
    np.testing.assert_allclose([resumed.losses[s] for s in (4, 5, 6)], [reference[s] for s in (4, 5, 6)], rtol=RTOL)

    # 1 -> 2: the one-process run's step 2 resumes on two processes: steps 3..6 and the final checkpoint
    # equal the one-process run's
    back = tmp_path / "back"
    shutil.copytree(one, back)
    for step in (4, 6):
        shutil.rmtree(back / "checkpoints" / str(step))
    reports, _ = two_processes(base_overrides(train_assets, back) + common, tmp_path, "back")
    for r in reports:
        assert r["status"] == "completed" and sorted(map(int, r["losses"])) == [3, 4, 5, 6]
        np.testing.assert_allclose([r["losses"][str(s)] for s in (3, 4, 5, 6)], [reference[s] for s in (3, 4, 5, 6)],
                                   rtol=RTOL)
    want, got = params_at(one, 6), params_at(back, 6)
    assert want.keys() == got.keys() and len(want) > 3
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-6, err_msg=key)
    # and the checkpoints differ from the start: the comparison can fail
    assert not np.allclose(params_at(one, 2)[key], want[key])
