"""Optimizer pieces against hand-computed values: the weight-decay mask, the warmup + decay
schedules, and gradient accumulation (same loss and update as one big batch)."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from atlas_jax.model import init_model
from atlas_jax.sharding import MeshConfig, build_mesh
from atlas_jax.train.config import OptimSection
from atlas_jax.train.optimizer import decay_mask, learning_rate_schedule
from atlas_jax.train.step import build_steps
from tests.model.helpers import TINY


def test_no_decay_on_norms_and_biases():
    model = init_model(TINY.replace(qkv_bias=True), seed=0)
    params = nnx.state(model, nnx.Param)
    mask = dict(nnx.to_flat_state(decay_mask(params)))
    flags = {"/".join(map(str, path)): bool(var.get_value()) for path, var in mask.items()}
    assert flags["layers/self_attn/q_proj/kernel"] and flags["embed_tokens"] and flags["lm_head"]
    assert not flags["layers/self_attn/q_proj/bias"] and not flags["norm/scale"]
    assert not flags["layers/input_layernorm/scale"]


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_schedules(schedule):
    cfg = OptimSection(learning_rate=1.0, schedule=schedule, warmup_steps=4, final_lr_ratio=0.1)
    lr = learning_rate_schedule(cfg, total_steps=14)
    assert [float(lr(s)) for s in range(5)] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    # 10 decay steps after warmup: halfway and at the end
    expected_mid = {"cosine": 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)), "linear": 0.55, "constant": 1.0}
    expected_end = {"cosine": 0.1, "linear": 0.1, "constant": 1.0}
    assert float(lr(9)) == pytest.approx(expected_mid[schedule], rel=1e-5)
    assert float(lr(14)) == pytest.approx(expected_end[schedule], rel=1e-5)


def test_gradient_accumulation_equals_one_big_batch():
    rng = np.random.RandomState(0)
    b, t = 8, 16
    # uneven weights per row: accumulation must still normalise by the whole step's Σw
    weights = (rng.rand(b, t) > 0.5).astype(np.float32) * np.arange(1, b + 1, dtype=np.float32)[:, None]
    batch = {"input_ids": rng.randint(0, TINY.vocab_size, (b, t)).astype(np.int32),
             "target_ids": rng.randint(0, TINY.vocab_size, (b, t)).astype(np.int32),
             "loss_weights": weights, "segment_ids": np.ones((b, t), np.int32),
             "positions": np.broadcast_to(np.arange(t), (b, t)).astype(np.int32)}
    mesh = build_mesh(MeshConfig(num_devices=2))
    results = []
    for accum in (1, 4):
        # plain SGD with lr 1: the parameter change is exactly the gradient (Adam's first step is
        # ~lr·sign(g), which would hide gradient differences and amplify rounding on tiny gradients)
        tx, schedule = optax.sgd(1.0), optax.constant_schedule(1.0)
        steps = build_steps(init_model(TINY, seed=0, mesh=mesh), tx, schedule, mesh, accum, 64)
        global_batch = {k: jax.device_put(v, steps.batch_shardings[k]) for k, v in batch.items()}
        params, _, metrics = steps.train(steps.params, steps.opt_state, global_batch, jnp.int32(0))
        results.append((jax.device_get(metrics), jax.tree.leaves(jax.device_get(params))))
    (m1, p1), (m4, p4) = results
    assert m1["loss"] == pytest.approx(m4["loss"], rel=1e-5)
    assert m1["grad_norm"] == pytest.approx(m4["grad_norm"], rel=1e-4)
    assert m1["weighted_tokens"] == m4["weighted_tokens"] == weights.sum()
    for a, c in zip(p1, p4):
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7)
    # and the step really moved the parameters
    assert any(not np.allclose(a, c) for a, c in zip(p1, jax.tree.leaves(nnx.state(init_model(TINY, seed=0), nnx.Param))))
