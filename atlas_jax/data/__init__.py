"""atlas_jax.data: trajectories -> packed, weighted training batches.

trajectory.py   read_trajectories (AgentTraj-L / ShareGPT / OpenAI JSONL or JSON) -> Trajectory, ReadReport
mask.py         read_mask, step_weights (modes mask / all / agentgym), check_mask_against
spans.py        encode_steps: chat template -> token ids + per-token step index
encode.py       TrajectoryEncoder(tokenizer, EncodeOptions, mask).encode / .prepare -> EncodedTrajectory
length.py       fit_length (drop after the last weighted token, max_length truncation), LengthStats
sequences.py    batch contract; sequence_features, single_sequence_batch (unpacked reference)
pipeline.py     DataConfig, TrainData (Grain: shuffle, shard, encode, pack, batch), to_global_batch
tfds_builder.py build_array_record (JSONL -> ArrayRecord via TFDS, no TensorFlow needed)
tiny_tokenizer.py build_tiny_tokenizer (tests and demo); chat_templates.py: template copies
inspect_cmd.py  `atlas-jax inspect`
"""
