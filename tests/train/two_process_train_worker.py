"""One process of a local multi-process training run (tests/train/test_two_process.py).

Usage: python two_process_train_worker.py PORT PROCESS_ID NUM_PROCESSES SIGTERM_AT OUT_JSON dotted.key=value...

One CPU device per process. SIGTERM_AT > 0: this process sends itself a real SIGTERM while the
trainer fetches its SIGTERM_AT-th batch (a deterministic moment inside the training loop);
0: no signal.
"""
import json
import os
import signal
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main(port: str, process_id: str, num_processes: str, sigterm_at: str, out_path: str, *overrides: str) -> None:
    os.environ.update(ATLAS_COORDINATOR=f"127.0.0.1:{port}", ATLAS_NUM_PROCESSES=num_processes,
                      ATLAS_PROCESS_ID=process_id)
    from atlas_jax.train.multihost import maybe_initialize_distributed

    maybe_initialize_distributed()
    import jax

    from atlas_jax.data.pipeline import TrainData
    from atlas_jax.train.config import load_run_config
    from atlas_jax.train.trainer import train

    if int(sigterm_at):
        original, calls = TrainData.__next__, []

        def next_then_signal(self):
            calls.append(1)
            if len(calls) == int(sigterm_at):
                os.kill(os.getpid(), signal.SIGTERM)
            return original(self)
        TrainData.__next__ = next_then_signal

    cfg = load_run_config(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "tiny_cpu.yaml"), overrides)
    result = train(cfg)
    with open(out_path, "w") as f:
        json.dump({"process_index": jax.process_index(), "process_count": jax.process_count(),
                   "devices": jax.device_count(), "losses": result.losses, "status": result.status,
                   "step": result.step}, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
