"""A repeating pipeline whose every trajectory encodes to nothing fails instead of hanging."""
from __future__ import annotations

from pathlib import Path

import pytest

from atlas_jax.data.encode import EncodeOptions
from atlas_jax.data.pipeline import DataConfig, TrainData

SAMPLE = Path(__file__).resolve().parents[2] / "data/sample/babyai_train.jsonl"


def test_no_trainable_sequence_is_an_error_not_a_hang(tokenizer_dirs):
    # every BabyAI task prompt is longer than 64 tiny-tokenizer tokens: no weighted token survives
    data = TrainData(DataConfig(train_files=[str(SAMPLE)], tokenizer=str(tokenizer_dirs["marked"]), seq_len=64,
                                global_batch_size=2, encode=EncodeOptions(weight_mode="all")))
    with pytest.raises(Exception, match="produced a training sequence"):
        next(data)
