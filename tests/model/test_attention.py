"""Packed attention: a packed row gives exactly what each of its sequences gives alone, and the
fused (jax.nn.dot_product_attention) path is wired with the same mask as the reference."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atlas_jax.convert.checkpoint import load_hf
from atlas_jax.model.attention import attention_mask, blockwise_attention, fused_attention, xla_attention
from tests.model.conftest import torch_logits


def pack(sequences: list[np.ndarray], length: int):
    """Hand-built packed row: tokens, segment ids 1..k (0 = padding), positions restarting at 0."""
    tokens, segments, positions = np.zeros(length, np.int32), np.zeros(length, np.int32), np.zeros(length, np.int32)
    start = 0
    for i, seq in enumerate(sequences):
        tokens[start:start + len(seq)] = seq
        segments[start:start + len(seq)] = i + 1
        positions[start:start + len(seq)] = np.arange(len(seq))
        start += len(seq)
    return tokens, segments, positions


@pytest.mark.parametrize("family", ["llama", "mistral"])  # mistral: sliding window 5 < sequence lengths
def test_packed_rows_equal_sequences_alone(family, hf_dirs):
    model = load_hf(hf_dirs[family], dtype="float32")
    rng = np.random.RandomState(3)
    rows = [[rng.randint(0, 256, n) for n in (7, 9)], [rng.randint(0, 256, n) for n in (4, 3, 8)]]
    packed = [pack(seqs, 20) for seqs in rows]  # both rows end in padding
    tokens, segments, positions = (jnp.asarray(np.stack(x)) for x in zip(*packed))
    logits = np.asarray(jax.jit(lambda t, p, s: model(t, p, s))(tokens, positions, segments))
    assert np.isfinite(logits).all()  # padding rows included
    # each sequence alone, unpacked: one per row, right-padded (causal, so the padding after a
    # sequence cannot change its logits), no segment ids or positions given
    alone_seqs = [seq for seqs in rows for seq in seqs]
    alone_ids = np.zeros((len(alone_seqs), max(map(len, alone_seqs))), np.int32)
    for i, seq in enumerate(alone_seqs):
        alone_ids[i, :len(seq)] = seq
    alone = np.asarray(jax.jit(lambda t: model(t))(jnp.asarray(alone_ids)))
    hf_alone = torch_logits(hf_dirs[family], alone_ids)
    i = 0
    for r, seqs in enumerate(rows):
        start = 0
        for seq in seqs:
            n = len(seq)
            # equal up to float32 summation order (different lengths reduce in a different order)
            np.testing.assert_allclose(logits[r, start:start + n], alone[i, :n], atol=2e-6, rtol=0)
            np.testing.assert_allclose(alone[i, :n], hf_alone[i, :n], atol=1e-4, rtol=0)
            start, i = start + n, i + 1


def test_mask_by_hand():
    positions = jnp.asarray([[0, 1, 2, 0, 1, 0]])
    segments = jnp.asarray([[1, 1, 1, 2, 2, 0]])
    mask = np.asarray(attention_mask(positions, positions, segments, segments, sliding_window=2))[0]
    expected = np.array([
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [0, 1, 1, 0, 0, 0],  # window 2: position 2 no longer sees position 0
        [0, 0, 0, 1, 0, 0],
        [0, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],  # padding sees only padding: no fully masked row
    ], dtype=bool)
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("case", ["causal", "packed", "window"])
def test_fused_path_matches_reference(case):
    """The cuDNN code path, run with jax.nn's XLA implementation on CPU."""
    rng = np.random.RandomState(0)
    q = jnp.asarray(rng.randn(2, 10, 4, 8), jnp.float32)
    k = jnp.asarray(rng.randn(2, 10, 2, 8), jnp.float32)
    v = jnp.asarray(rng.randn(2, 10, 2, 8), jnp.float32)
    positions = jnp.broadcast_to(jnp.arange(10), (2, 10))
    segments, window = None, None
    if case == "packed":
        segments = jnp.asarray([[1] * 4 + [2] * 6, [1] * 9 + [0]])
        positions = jnp.asarray([list(range(4)) + list(range(6)), list(range(9)) + [0]])
    if case == "window":
        window = 3
    mask = attention_mask(positions, positions, segments, segments, window)
    reference = xla_attention(q, k, v, mask)
    fused = fused_attention(q, k, v, None if case == "causal" else mask, implementation="xla")
    np.testing.assert_allclose(np.asarray(fused), np.asarray(reference), atol=1e-5, rtol=1e-5)
    if case == "window":  # unpacked with a window: the fused call's own local window, no mask
        fused = fused_attention(q, k, v, None, implementation="xla", sliding_window=window)
    np.testing.assert_allclose(np.asarray(fused), np.asarray(reference), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", ["causal", "packed", "window"])
def test_blockwise_matches_reference(case):
    """Query blocks of 4 (3 rematerialised blocks of a 12-token row) give the one-block
    reference's output and gradients on packed rows."""
    rng = np.random.RandomState(1)
    q, k, v = (jnp.asarray(rng.randn(2, 12, h, 8), jnp.float32) for h in (4, 2, 2))
    positions = jnp.broadcast_to(jnp.arange(12), (2, 12))
    segments, window = None, None
    if case == "packed":  # row 0: sequences of 5 and 7; row 1: 10 tokens, then padding
        segments = jnp.asarray([[1] * 5 + [2] * 7, [1] * 10 + [0] * 2])
        positions = jnp.asarray([list(range(5)) + list(range(7)), list(range(10)) + [0, 0]])
    if case == "window":
        window = 3
    cotangent = jnp.asarray(rng.randn(2, 12, 4, 8), jnp.float32)

    def reference(q, k, v):
        mask = attention_mask(positions, positions, segments, segments, window)
        return jnp.sum(xla_attention(q, k, v, mask) * cotangent)

    def blocked(q, k, v):
        return jnp.sum(blockwise_attention(q, k, v, positions, segments, window, q_block=4) * cotangent)

    ref_value, ref_grads = jax.value_and_grad(reference, argnums=(0, 1, 2))(q, k, v)
    value, grads = jax.jit(jax.value_and_grad(blocked, argnums=(0, 1, 2)))(q, k, v)
    np.testing.assert_allclose(float(value), float(ref_value), rtol=1e-5)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=1e-5, rtol=1e-5)
