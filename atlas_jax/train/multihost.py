"""Multi-process helpers: joining a JAX cluster from the environment, and gathering small
per-process JSON states (the data iterator's) so one checkpoint holds every process's."""
from __future__ import annotations

import json
import os

import jax
import numpy as np


def maybe_initialize_distributed() -> None:
    """Join a multi-process JAX cluster when the environment describes one.

    * ``ATLAS_COORDINATOR=host:port`` + ``ATLAS_NUM_PROCESSES`` + ``ATLAS_PROCESS_ID``: explicit
      (local multi-process runs, custom launchers);
    * ``ATLAS_DISTRIBUTED=1`` (set by launch/tpu_pod.sh and launch/slurm.sbatch), or SLURM with
      more than one task: ``jax.distributed.initialize()`` discovers the cluster itself (SLURM
      variables, TPU VM metadata).
    Must run before anything touches a JAX device.
    """
    coordinator = os.environ.get("ATLAS_COORDINATOR")
    if coordinator:
        try:
            num, pid = int(os.environ["ATLAS_NUM_PROCESSES"]), int(os.environ["ATLAS_PROCESS_ID"])
        except (KeyError, ValueError):
            raise ValueError("ATLAS_COORDINATOR is set: ATLAS_NUM_PROCESSES and ATLAS_PROCESS_ID must be "
                             "integers too") from None
        if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
            # CPU processes need a collectives backend to exchange gradients
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num, process_id=pid)
        return
    slurm_tasks = int(os.environ.get("SLURM_NTASKS", "1") or 1)
    if os.environ.get("ATLAS_DISTRIBUTED") == "1" or slurm_tasks > 1:
        jax.distributed.initialize()


def gather_json(obj) -> list:
    """Every process's ``obj`` (JSON-serialisable), indexed by process; a plain list of one
    element in single-process runs."""
    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)
    lengths = multihost_utils.process_allgather(np.asarray([len(data)], np.int32))
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[:len(data)] = data
    everything = multihost_utils.process_allgather(padded)
    return [json.loads(bytes(row[:int(n)]).decode()) for row, n in zip(everything, lengths.reshape(-1))]
