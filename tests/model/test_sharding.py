"""Sharded forward and gradients equal the single-device result (float32, 8 emulated devices)."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from atlas_jax.model import init_model, place_model
from atlas_jax.sharding import MeshConfig, batch_sharding, build_mesh
from tests.model.helpers import TINY, loss_and_grad_fn, random_batch, to_numpy


@pytest.fixture(scope="module")
def single_device_result():
    model = init_model(TINY, seed=0)
    fn, params = loss_and_grad_fn(model)
    batch = random_batch()
    (loss, logits), grads = fn(params, batch)
    return model, batch, float(loss), np.asarray(logits), to_numpy(grads)


@pytest.mark.parametrize("mesh_config", [MeshConfig(data=1, fsdp=8, tensor=1), MeshConfig(data=1, fsdp=4, tensor=2),
                                         MeshConfig(data=2, fsdp=2, tensor=2)], ids=["fsdp8", "tp2xfsdp4", "dp2xfsdp2xtp2"])
def test_sharded_equals_single_device(mesh_config, single_device_result):
    assert jax.device_count() == 8, "tests/conftest.py should emulate 8 CPU devices"
    model, batch, loss, logits, grads = single_device_result
    mesh = build_mesh(mesh_config)
    sharded_model = place_model(model, mesh)
    q_kernel = sharded_model.layers.self_attn.q_proj.kernel[...]
    spec = q_kernel.sharding.spec  # [layers, embed, q_heads, head_dim]
    assert spec[1] == ("fsdp" if mesh.shape["fsdp"] > 1 else None)
    assert spec[2] == ("tensor" if mesh.shape["tensor"] > 1 else None)
    sharded_batch = {k: jax.device_put(v, batch_sharding(mesh)) for k, v in batch.items()}
    fn, params = loss_and_grad_fn(sharded_model)
    (s_loss, s_logits), s_grads = fn(params, sharded_batch)
    assert len(s_logits.sharding.device_set) == 8
    np.testing.assert_allclose(float(s_loss), loss, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(s_logits), logits, rtol=1e-5, atol=1e-6)
    s_grads = to_numpy(s_grads)
    flat_ref, flat = jax.tree.leaves_with_path(grads), dict(jax.tree.leaves_with_path(s_grads))
    for path, g in flat_ref:
        np.testing.assert_allclose(flat[path], g, rtol=1e-5, atol=1e-7, err_msg=jax.tree_util.keystr(path))
