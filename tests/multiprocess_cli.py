"""Run one `atlas-jax` command as several local JAX processes (jax.distributed on 127.0.0.1), the way a
pod or SLURM job runs it on several hosts: each process gets ATLAS_COORDINATOR / ATLAS_NUM_PROCESSES /
ATLAS_PROCESS_ID (atlas_jax.train.multihost) and its own emulated CPU devices."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli_processes(argv: list[str], count: int, devices: int = 1, timeout: float = 300) -> list[str]:
    """Start ``atlas-jax ARGV`` in ``count`` processes of ``devices`` CPU devices each; all must exit 0.
    Returns each process's stdout."""
    port = free_port()
    base = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
            "JAX_DEFAULT_MATMUL_PRECISION": "highest",  # as tests/conftest.py sets in the test process
            "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "ATLAS_COORDINATOR": f"127.0.0.1:{port}", "ATLAS_NUM_PROCESSES": str(count)}
    procs = [subprocess.Popen([sys.executable, "-m", "atlas_jax.cli", *argv], cwd=ROOT,
                              env={**base, "ATLAS_PROCESS_ID": str(i)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(count)]
    try:
        results = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for i, (p, (out, err)) in enumerate(zip(procs, results)):
        assert p.returncode == 0, f"process {i} exited {p.returncode}:\n{out[-2000:]}\n{err[-4000:]}"
    return [out for out, _ in results]
