"""Grain pipeline: packed batches equal the unpacked sequences, resume, global arrays, TFDS source."""
import collections
import json

import numpy as np
import pytest

from atlas_jax.data.encode import EncodeOptions
from atlas_jax.data.pipeline import DataConfig, TrainData, to_global_batch
from atlas_jax.data.sequences import single_sequence_batch
from atlas_jax.data.trajectory import read_trajectories

SEQ_LEN = 256


def reference_sequences(tokenizer, path, max_length):
    """Unpacked training arrays per trajectory straight from transformers (mode "all"): the
    assistant mask is the token weight, except on turns marked loss false (the acknowledgement);
    drop after the last weighted token, cut at max_length."""
    out = {}
    for traj in read_trajectories(path)[0]:
        enc = tokenizer.apply_chat_template(traj.messages(), tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        ids, w = np.asarray(enc["input_ids"]), np.asarray(enc["assistant_masks"], np.float32)
        starts = np.flatnonzero(np.diff(np.concatenate([[0], w])) == 1)
        for turn, start in zip(traj.step_turns, starts):
            if turn.loss is False:
                end = start
                while end < len(w) and w[end]:
                    end += 1
                w[start:end] = 0
        keep = min(int(np.flatnonzero(w)[-1]) + 1, max_length)
        row = single_sequence_batch(ids[:keep], w[:keep])
        out[traj.item_id] = {k: v[0] for k, v in row.items()}
    return out


def segments(batch):
    """Yield every packed sequence of a host batch as a dict of 1-D arrays."""
    for r in range(len(batch["input_ids"])):
        seg_row = batch["segment_ids"][r]
        assert np.all(batch["loss_weights"][r][seg_row == 0] == 0)
        for s in sorted(set(seg_row.tolist()) - {0}):
            idx = np.flatnonzero(seg_row == s)
            assert np.all(np.diff(idx) == 1)  # contiguous
            yield {k: v[r][idx] for k, v in batch.items()}


def config(path, tokenizer_dir, **kw):
    kw.setdefault("encode", EncodeOptions(weight_mode="all"))
    return DataConfig(train_files=[path], tokenizer=tokenizer_dir, seq_len=SEQ_LEN, global_batch_size=2, **kw)


def match_epoch(batches, refs):
    """Match every packed segment to its reference sequence; returns item_id counts."""
    by_ids = {tuple(r["input_ids"].tolist()): item for item, r in refs.items()}
    seen = collections.Counter()
    for batch in batches:
        for seg in segments(batch):
            item = by_ids[tuple(seg["input_ids"].tolist())]
            ref = refs[item]
            for key in ("target_ids", "loss_weights", "positions"):
                np.testing.assert_array_equal(seg[key], ref[key], err_msg=f"{item} {key}")
            seen[item] += 1
    return seen


def test_packed_batches_equal_unpacked_sequences(corpus_file, tokenizer_dirs, tokenizer):
    data = TrainData(config(corpus_file, tokenizer_dirs["unmarked"], num_epochs=1, seed=3), process_index=0,
                     process_count=1)
    batches = list(data)
    for b in batches:
        assert {k: (v.shape, v.dtype.name) for k, v in b.items()} == {
            "input_ids": ((2, SEQ_LEN), "int32"), "target_ids": ((2, SEQ_LEN), "int32"),
            "loss_weights": ((2, SEQ_LEN), "float32"), "segment_ids": ((2, SEQ_LEN), "int32"),
            "positions": ((2, SEQ_LEN), "int32")}
    refs = reference_sequences(tokenizer, corpus_file, SEQ_LEN)
    assert any(len(set(b["segment_ids"][r].tolist()) - {0}) > 1 for b in batches for r in range(2))  # real packing
    assert match_epoch(batches, refs) == collections.Counter(refs.keys())  # every trajectory exactly once
    # The loss Σ w·CE / Σ w sees the same (target, weight) pairs packed and unpacked.
    assert sum(b["loss_weights"].sum() for b in batches) == sum(r["loss_weights"].sum() for r in refs.values())
    assert data.read_report.used == 12 and data.encode_report.encoded == 12


def test_iterator_state_resumes_on_the_exact_next_batch(corpus_file, tokenizer_dirs):
    cfg = config(corpus_file, tokenizer_dirs["marked"], seed=7)  # repeats forever
    data = TrainData(cfg, process_index=0, process_count=1)
    for _ in range(3):
        next(data)
    state = json.loads(json.dumps(data.get_state()))  # must survive a JSON checkpoint item
    expected = [next(data) for _ in range(8)]  # crosses the epoch boundary
    resumed = TrainData(cfg, process_index=0, process_count=1)
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    other_seed = TrainData(config(corpus_file, tokenizer_dirs["marked"], seed=8), process_index=0, process_count=1)
    fresh = TrainData(cfg, process_index=0, process_count=1)
    assert not np.array_equal(next(other_seed)["input_ids"], next(fresh)["input_ids"])


def test_global_batch_is_sharded_over_data_and_fsdp(corpus_file, tokenizer_dirs):
    import jax

    from atlas_jax.sharding import MeshConfig, batch_sharding, build_mesh
    mesh = build_mesh(MeshConfig(data=2, fsdp=4, tensor=1))
    cfg = DataConfig(train_files=[corpus_file], tokenizer=tokenizer_dirs["marked"], seq_len=SEQ_LEN,
                     global_batch_size=8, encode=EncodeOptions(weight_mode="all"))
    data = TrainData(cfg)  # one process: jax.process_index() == 0
    host = next(data)
    batch = to_global_batch(host, mesh)
    for key, value in batch.items():
        assert isinstance(value, jax.Array) and value.shape == (8, SEQ_LEN)
        assert value.sharding.is_equivalent_to(batch_sharding(mesh, 2), 2)
        assert sorted(s.data.shape[0] for s in value.addressable_shards) == [1] * 8  # a row per device
        np.testing.assert_array_equal(np.asarray(value), host[key])


def test_config_errors_name_the_key(corpus_file, tokenizer_dirs):
    with pytest.raises(ValueError, match="max_length=300 exceeds data.seq_len"):
        config(corpus_file, tokenizer_dirs["marked"], encode=EncodeOptions(max_length=300))
    with pytest.raises(ValueError, match="global_batch_size=2 is not divisible by 3"):
        TrainData(config(corpus_file, tokenizer_dirs["marked"]), process_index=0, process_count=3)
    with pytest.raises(ValueError, match="needs a mask file"):
        TrainData(config(corpus_file, tokenizer_dirs["marked"], encode=EncodeOptions()), process_index=0,
                  process_count=1)


def test_tfds_array_record_source_matches_jsonl(corpus_file, tokenizer_dirs, tokenizer, tmp_path):
    import importlib.util

    from atlas_jax.data.tfds_builder import build_array_record
    assert importlib.util.find_spec("tensorflow") is None  # the builder must work without TensorFlow
    dataset_dir, reports = build_array_record([corpus_file], tmp_path / "tfds")
    assert reports["train"].used == 12
    with pytest.raises(FileExistsError, match="overwrite"):
        build_array_record([corpus_file], tmp_path / "tfds")
    data = TrainData(config(dataset_dir, tokenizer_dirs["marked"], num_epochs=1), process_index=0, process_count=1)
    refs = reference_sequences(tokenizer, corpus_file, SEQ_LEN)
    assert match_epoch(list(data), refs) == collections.Counter(refs.keys())
    assert data.read_report.read == 12
