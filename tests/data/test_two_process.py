"""Two JAX processes see disjoint trajectories that together cover the epoch."""
import collections
import json
import os
import socket
import subprocess
import sys

from tests.data.conftest import corpus, reference_sequence, write_jsonl

WORKER = os.path.join(os.path.dirname(__file__), "two_process_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_are_disjoint_and_cover_the_epoch(tmp_path, tokenizer_dirs, tokenizer):
    path = write_jsonl(tmp_path / "traj.jsonl", corpus(10))
    port = str(free_port())
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    outs = [tmp_path / f"out{i}.json" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, WORKER, port, str(i), path, tokenizer_dirs["marked"], str(outs[i])],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=120)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)[-4000:]
    results = [json.loads(o.read_text()) for o in outs]
    assert [r["process_index"] for r in results] == [0, 1] and all(r["process_count"] == 2 for r in results)
    assert all(r["global_shape"] == [4, 96] and r["local_rows_ok"] for r in results)
    # Reference: every trajectory's sequence from transformers (mode "all": up to the last assistant
    # token, cut at seq_len).
    expected = [reference_sequence(tokenizer, rec, 96) for rec in corpus(10)]
    seen = [collections.Counter(tuple(s) for s in r["sequences"]) for r in results]
    assert not set(seen[0]) & set(seen[1])  # disjoint
    assert seen[0] + seen[1] == collections.Counter(expected)  # together: the epoch, each once
    assert all(sum(c.values()) == 5 for c in seen)  # 10 records split evenly
