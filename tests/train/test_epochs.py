"""train.epochs sizes a run from the packed data; each trajectory is encoded once per run;
metrics carry real (non-padding) tokens/s beside padded tokens/s and host batches/s."""
from __future__ import annotations

import json

import numpy as np
import pytest

from atlas_jax.config_loader import ConfigError
from atlas_jax.data.encode import EncodeOptions, TrajectoryEncoder, load_tokenizer
from atlas_jax.data.trajectory import read_trajectories
from atlas_jax.train.trainer import train
from tests.train.conftest import run_config


def test_two_epochs_see_every_token_twice_and_encode_once(train_assets, tmp_path, monkeypatch):
    # every real token of the file, counted from each trajectory encoded alone
    trajectories, _ = read_trajectories([train_assets["train"]])
    encoder = TrajectoryEncoder(load_tokenizer(train_assets["tokenizer"]), EncodeOptions(weight_mode="all",
                                                                                         max_length=256))
    tokens_per_epoch = sum(len(encoder.features(t)["input_ids"]) for t in trajectories)
    calls = []
    original = TrajectoryEncoder.features
    monkeypatch.setattr(TrajectoryEncoder, "features", lambda self, traj: calls.append(traj.item_id) or
                        original(self, traj))
    result = train(run_config(train_assets, tmp_path, "train.steps=null", "train.epochs=2", "train.save_every=0",
                              "data.global_batch_size=2", "mesh.num_devices=2", "optim.warmup_steps=0"))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "loss" in r and "tokens" in r]
    assert result.step == len(train_records) == max(result.losses)  # one record per step, ends at the last
    assert sum(r["tokens"] for r in train_records) == 2 * tokens_per_epoch  # two whole epochs, no more
    assert sorted(calls) == sorted(t.item_id for t in trajectories)  # each trajectory encoded once
    for r in train_records:
        assert r["real_tokens_per_sec"] / r["tokens_per_sec"] == pytest.approx(r["tokens"] / (2 * 256), rel=1e-6)
        assert r["host_batches_per_sec"] > 0
        assert r["lm_head_dense"] == 0  # weight_mode=all on short rows still fits the sparse buffer


def test_steps_xor_epochs(train_assets, tmp_path):
    with pytest.raises(ConfigError, match="exactly one of train.steps or train.epochs"):
        run_config(train_assets, tmp_path, "train.epochs=1")
    with pytest.raises(ConfigError, match="train.lm_head"):
        run_config(train_assets, tmp_path, "train.lm_head=fast")


def test_sparse_and_dense_head_runs_agree(train_assets, tmp_path):
    """Three steps of the same run with either head: the same losses (to float32 reordering)."""
    common = ("train.steps=3", "train.save_every=0", "mesh.num_devices=1")
    sparse = train(run_config(train_assets, tmp_path / "sparse", *common))
    dense = train(run_config(train_assets, tmp_path / "dense", *common, "train.lm_head=dense"))
    np.testing.assert_allclose([sparse.losses[s] for s in (1, 2, 3)], [dense.losses[s] for s in (1, 2, 3)],
                               rtol=1e-5)


def test_worker_processes_resume_exactly(train_assets):
    """data.worker_count=1 (Grain worker process): the in-process batches, and a resume from a
    saved iterator state continues on the exact next batch."""
    from atlas_jax.data.pipeline import DataConfig, TrainData

    def data(workers):
        return TrainData(DataConfig(train_files=[train_assets["train"]], tokenizer=train_assets["tokenizer"],
                                    seq_len=128, global_batch_size=2, encode=EncodeOptions(weight_mode="all"),
                                    worker_count=workers), process_index=0, process_count=1)

    reference = data(0)
    expected = [next(reference) for _ in range(5)]
    first = data(1)
    got = [next(first) for _ in range(3)]
    state = first.get_state()
    resumed = data(1)
    resumed.set_state(state)
    got += [next(resumed) for _ in range(2)]
    for a, b in zip(got, expected):
        for key in b:
            np.testing.assert_array_equal(a[key], b[key])
