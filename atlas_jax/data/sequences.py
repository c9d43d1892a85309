"""Per-sequence training arrays (the batch contract) and their unpacked [1, T] form.

Batch contract, every array [B, T]:
- ``input_ids`` int32; ``target_ids`` int32, the next token of the same sequence;
- ``loss_weights`` float32, the weight of predicting ``target_ids`` there (= that target token's
  weight); 0 on each sequence's last position and on padding;
- ``segment_ids`` int32, 1..k for the packed sequences of a row, 0 for padding;
- ``positions`` int32, restarting at 0 at each sequence start.
Loss = Σ w·CE / Σ w. Shifting happens per sequence before packing, so no target crosses a boundary.
"""
from __future__ import annotations

import numpy as np

BATCH_KEYS = ("input_ids", "target_ids", "loss_weights", "segment_ids", "positions")
PACKED_FEATURES = ("input_ids", "target_ids", "loss_weights")  # packed; segments/positions come from packing


def sequence_features(token_ids_L: np.ndarray, token_weights_L: np.ndarray) -> dict[str, np.ndarray]:
    """Shifted [L] arrays of one sequence: inputs, next-token targets and the targets' weights."""
    token_ids_L = np.asarray(token_ids_L, np.int32)
    token_weights_L = np.asarray(token_weights_L, np.float32)
    if token_ids_L.shape != token_weights_L.shape or token_ids_L.ndim != 1:
        raise ValueError(f"token ids {token_ids_L.shape} and weights {token_weights_L.shape} must be equal 1-D shapes")
    target_ids_L = np.zeros_like(token_ids_L)
    target_ids_L[:-1] = token_ids_L[1:]
    weights_L = np.zeros_like(token_weights_L)
    weights_L[:-1] = token_weights_L[1:]
    return {"input_ids": token_ids_L, "target_ids": target_ids_L, "loss_weights": weights_L}


def single_sequence_batch(token_ids_L: np.ndarray, token_weights_L: np.ndarray,
                          seq_len: int | None = None) -> dict[str, np.ndarray]:
    """The batch-contract arrays [1, T] of one unpacked sequence, zero-padded to ``seq_len``."""
    feats = sequence_features(token_ids_L, token_weights_L)
    n = len(feats["input_ids"])
    seq_len = n if seq_len is None else seq_len
    if n > seq_len:
        raise ValueError(f"sequence of {n} tokens does not fit seq_len={seq_len}")
    out = {}
    for key, value in feats.items():
        row = np.zeros(seq_len, value.dtype)
        row[:n] = value
        out[key] = row[None]
    out["segment_ids"] = (np.arange(seq_len) < n).astype(np.int32)[None]
    out["positions"] = np.where(np.arange(seq_len) < n, np.arange(seq_len), 0).astype(np.int32)[None]
    return out
