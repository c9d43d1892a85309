"""One of two local JAX processes training together (test_two_process_training).

Usage: python two_process_train_worker.py PORT PROCESS_ID OUT_JSON dotted.key=value...
"""
import json
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main(port: str, process_id: str, out_path: str, *overrides: str) -> None:
    os.environ.update(ATLAS_COORDINATOR=f"127.0.0.1:{port}", ATLAS_NUM_PROCESSES="2", ATLAS_PROCESS_ID=process_id)
    from atlas_jax.train.multihost import maybe_initialize_distributed

    maybe_initialize_distributed()
    import jax

    from atlas_jax.train.config import load_run_config
    from atlas_jax.train.trainer import train

    cfg = load_run_config(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "tiny_cpu.yaml"), overrides)
    result = train(cfg)
    with open(out_path, "w") as f:
        json.dump({"process_index": jax.process_index(), "process_count": jax.process_count(),
                   "devices": jax.device_count(), "losses": result.losses, "status": result.status}, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
