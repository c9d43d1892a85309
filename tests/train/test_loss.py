"""The chunked weighted loss equals the dense computation, and unweighted tokens do not matter."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atlas_jax.model import init_model
from atlas_jax.train.loss import dense_weighted_ce, num_chunks, weighted_ce_sums
from tests.model.helpers import TINY


@pytest.fixture(scope="module")
def model_and_batch():
    model = init_model(TINY, seed=3)
    rng = np.random.RandomState(0)
    b, t = 4, 32
    batch = {"input_ids": rng.randint(0, TINY.vocab_size, (b, t)).astype(np.int32),
             "target_ids": rng.randint(0, TINY.vocab_size, (b, t)).astype(np.int32),
             "loss_weights": (rng.rand(b, t) * (rng.rand(b, t) > 0.6)).astype(np.float32),
             "segment_ids": np.ones((b, t), np.int32),
             "positions": np.broadcast_to(np.arange(t), (b, t)).astype(np.int32)}
    return model, {k: jnp.asarray(v) for k, v in batch.items()}


def loss_fn(chunk_tokens):
    def f(model, batch):
        total, weight = weighted_ce_sums(model, batch, chunk_tokens)
        return total / weight
    return jax.jit(f, static_argnums=())


@pytest.mark.parametrize("chunk_tokens", [16, 40, 4096])
def test_chunked_equals_dense(model_and_batch, chunk_tokens):
    model, batch = model_and_batch
    chunked = float(loss_fn(chunk_tokens)(model, batch))
    logits = model(batch["input_ids"], batch["positions"], batch["segment_ids"])
    dense = float(dense_weighted_ce(logits, batch["target_ids"], batch["loss_weights"]))
    # hand check of the definition on the dense logits: Σ w·CE / Σ w with float weights
    logp = np.asarray(jax.nn.log_softmax(logits, -1), np.float64)
    t, w = np.asarray(batch["target_ids"]), np.asarray(batch["loss_weights"], np.float64)
    ce = -np.take_along_axis(logp, t[..., None], -1)[..., 0]
    np.testing.assert_allclose(dense, (w * ce).sum() / w.sum(), rtol=1e-6)
    np.testing.assert_allclose(chunked, dense, rtol=1e-6)


def test_num_chunks():
    assert num_chunks(4, 32, 4096) == 1
    assert num_chunks(4, 32, 16) == 8  # 4 rows x 4 positions = 16 tokens per chunk
    assert num_chunks(4, 32, 40) == 4  # 3 chunks would not divide 32


def test_unweighted_tokens_change_nothing(model_and_batch):
    model, batch = model_and_batch
    f = loss_fn(64)
    grad_f = jax.jit(jax.grad(lambda m, b: weighted_ce_sums(m, b, 64)[0] / weighted_ce_sums(m, b, 64)[1]))
    base_loss, base_grad = float(f(model, batch)), grad_f(model, batch)
    w = np.asarray(batch["loss_weights"])
    rng = np.random.RandomState(1)
    changed = dict(batch)
    # targets of unweighted positions, and inputs after the last weighted position of each row
    targets = np.asarray(batch["target_ids"]).copy()
    targets[w == 0] = rng.randint(0, TINY.vocab_size, (w == 0).sum())
    inputs = np.asarray(batch["input_ids"]).copy()
    for row in range(len(w)):
        last = np.nonzero(w[row])[0].max()
        inputs[row, last + 1:] = rng.randint(0, TINY.vocab_size, inputs.shape[1] - last - 1)
    changed["target_ids"], changed["input_ids"] = jnp.asarray(targets), jnp.asarray(inputs)
    assert float(f(model, changed)) == base_loss
    for a, b in zip(jax.tree.leaves(grad_f(model, changed)), jax.tree.leaves(base_grad)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # while changing a weighted target does change the loss
    weighted = np.argwhere(w > 0)[0]
    targets[tuple(weighted)] = (targets[tuple(weighted)] + 1) % TINY.vocab_size
    changed["target_ids"] = jnp.asarray(targets)
    assert float(f(model, changed)) != base_loss
