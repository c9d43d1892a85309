"""One of two JAX processes for test_two_process: reads an epoch and records every packed sequence.

Usage: python two_process_worker.py PORT PROCESS_ID DATA TOKENIZER OUT_JSON
"""
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main(port: str, process_id: str, data_path: str, tokenizer_dir: str, out_path: str) -> None:
    import json

    import jax
    import numpy as np

    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                               process_id=int(process_id), initialization_timeout=60)
    from atlas_jax.data.encode import EncodeOptions
    from atlas_jax.data.pipeline import DataConfig, TrainData, to_global_batch
    from atlas_jax.sharding import MeshConfig, build_mesh

    cfg = DataConfig(train_files=[data_path], tokenizer=tokenizer_dir, seq_len=96, global_batch_size=4,
                     num_epochs=1, seed=5, encode=EncodeOptions(weight_mode="all"))
    data = TrainData(cfg)
    sequences, global_shape, local_rows_ok = [], None, True
    mesh = build_mesh(MeshConfig(data=1, fsdp=-1))
    for i, batch in enumerate(data):
        for r in range(len(batch["input_ids"])):
            seg = batch["segment_ids"][r]
            for s in sorted(set(seg.tolist()) - {0}):
                sequences.append(batch["input_ids"][r][seg == s].tolist())
        if i == 0:
            arr = to_global_batch(batch, mesh)["input_ids"]
            global_shape = list(arr.shape)
            local = np.concatenate([np.asarray(s.data) for s in sorted(
                arr.addressable_shards, key=lambda s: s.index[0].start)])
            local_rows_ok = bool(np.array_equal(local, batch["input_ids"]))
    with open(out_path, "w") as f:
        json.dump({"process_index": jax.process_index(), "process_count": jax.process_count(),
                   "sequences": sequences, "global_shape": global_shape, "local_rows_ok": local_rows_ok,
                   "read": data.read_report.read}, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
