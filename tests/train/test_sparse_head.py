"""The sparse LM head (logits only at weighted positions) gives the dense reference's loss and
every gradient: packed and unpacked rows, one device and 8 sharded ones, and when a row
overflows the buffer (the dense fallback)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from atlas_jax.model import init_model, place_model
from atlas_jax.sharding import MeshConfig, batch_sharding, build_mesh
from atlas_jax.train.loss import gather_rows, head_capacity, weighted_ce_sums
from tests.model.helpers import TINY, to_numpy

B, T = 8, 32


def make_batch(packed: bool, seed: int = 0) -> dict:
    """~20% weighted positions; packed rows hold 3 sequences and trailing padding."""
    rng = np.random.RandomState(seed)
    weights = (rng.rand(B, T) * (rng.rand(B, T) < 0.2)).astype(np.float32)
    segments = np.ones((B, T), np.int32)
    positions = np.broadcast_to(np.arange(T), (B, T)).astype(np.int32).copy()
    if packed:
        for r in range(B):
            cuts = sorted(rng.choice(np.arange(2, T - 2), 3, replace=False))
            segments[r] = np.searchsorted(cuts, np.arange(T), side="right") + 1
            segments[r, cuts[2]:] = 0  # padding after the third sequence
            for s in (1, 2, 3):
                idx = np.nonzero(segments[r] == s)[0]
                positions[r, idx] = np.arange(len(idx))
            positions[r, segments[r] == 0] = 0
            weights[r, segments[r] == 0] = 0.0
    weights[0, :12] = 1.0  # row 0 holds the most weighted positions: 12 or a few more
    return {"input_ids": rng.randint(0, TINY.vocab_size, (B, T)).astype(np.int32),
            "target_ids": rng.randint(0, TINY.vocab_size, (B, T)).astype(np.int32),
            "loss_weights": weights, "segment_ids": segments, "positions": positions}


def loss_and_grads(model, batch, capacity):
    graphdef, params = nnx.split(model, nnx.Param)

    def f(p):
        total, weight = weighted_ce_sums(nnx.merge(graphdef, p), batch, chunk_tokens=64, capacity=capacity)
        return total / weight

    loss, grads = jax.jit(jax.value_and_grad(f))(params)
    return float(loss), to_numpy(grads)


def dense_reference(model, batch):
    """Σ w·CE / Σ w from the model's full float32 logits (no chunks, no gather)."""
    logits = np.asarray(model(batch["input_ids"], batch["positions"], batch["segment_ids"]), np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - \
        logits.max(-1, keepdims=True)
    ce = -np.take_along_axis(logp, batch["target_ids"][..., None], -1)[..., 0]
    w = batch["loss_weights"].astype(np.float64)
    return (w * ce).sum() / w.sum()


@pytest.fixture(scope="module")
def model():
    return init_model(TINY, seed=5)


def assert_same(result, reference):
    loss, grads = result
    ref_loss, ref_grads = reference
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    ref = dict(jax.tree.leaves_with_path(ref_grads))
    for path, g in jax.tree.leaves_with_path(grads):
        np.testing.assert_allclose(g, ref[path], rtol=1e-5, atol=1e-7, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("packed", [False, True], ids=["unpacked", "packed"])
def test_sparse_equals_dense(model, packed):
    batch = make_batch(packed)
    most = int((batch["loss_weights"] > 0).sum(1).max())
    assert 12 <= most < 16  # capacity 16 holds every row: the sparse head runs
    dense = loss_and_grads(model, batch, capacity=None)
    np.testing.assert_allclose(dense[0], dense_reference(model, batch), rtol=1e-6)
    assert_same(loss_and_grads(model, batch, capacity=16), dense)
    # a buffer smaller than row 0's weighted positions: the dense fallback, still exact
    assert_same(loss_and_grads(model, batch, capacity=8), dense)


def test_sparse_sharded_equals_single_device(model):
    batch = make_batch(packed=True, seed=1)
    reference = loss_and_grads(model, batch, capacity=None)
    mesh = build_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = place_model(model, mesh)
    sharded_batch = {k: jax.device_put(v, batch_sharding(mesh)) for k, v in batch.items()}
    assert_same(loss_and_grads(sharded, sharded_batch, capacity=16), reference)
    assert_same(loss_and_grads(sharded, sharded_batch, capacity=8), reference)  # overflow fallback, sharded


def test_gather_rows_by_hand():
    selected = jnp.asarray([[0, 1, 0, 1, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool)
    idx, real = gather_rows(selected, 3)
    np.testing.assert_array_equal(np.asarray(idx), [[1, 3, 4], [0, 0, 0], [0, 1, 2]])
    np.testing.assert_array_equal(np.asarray(real), [[1, 1, 1], [0, 0, 0], [1, 1, 1]])


def test_head_capacity():
    assert head_capacity(100, 1024) == 128  # 125 rounded up to a multiple of 64
    assert head_capacity(10, 1024) == 64
    assert head_capacity(900, 1024) is None  # no saving: the dense head
