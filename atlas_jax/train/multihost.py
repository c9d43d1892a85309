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


class AgreedFlag:
    """A per-process flag (SIGTERM received) made the same on every process, without a host barrier.

    ``dispatch(flag)`` starts an all-reduce (max) of every process's flag on the devices and
    returns at once; ``value(token)`` reads its result. The trainer dispatches one each step
    and reads it a step later, when the device has long finished it, so every process sees
    "some process was asked to stop" at the same step, and they all stop after the same step.
    One int32 per device: the cost of a scalar collective, not of a stalled pipeline.
    """

    def __init__(self, mesh):
        import jax.numpy as jnp
        from jax.sharding import NamedSharding, PartitionSpec

        self.single = jax.process_count() == 1
        if self.single:
            return
        self.sharding = NamedSharding(mesh, PartitionSpec(tuple(mesh.axis_names)))  # one element per device
        self.local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
        self.reduce = jax.jit(lambda flags_D: jnp.max(flags_D), out_shardings=NamedSharding(mesh, PartitionSpec()))

    def dispatch(self, flag: bool):
        if self.single:
            return flag
        flags_D = jax.make_array_from_process_local_data(self.sharding, np.full(self.local_devices, flag, np.int32))
        return self.reduce(flags_D)

    @staticmethod
    def value(token) -> bool:
        return bool(token) if isinstance(token, bool) else bool(np.asarray(jax.device_get(token)))
