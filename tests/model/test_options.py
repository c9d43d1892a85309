"""Run-time options give the plain path's numbers: remat policies and layer scan exactly (fp32,
same math), bfloat16 compute within bf16 tolerance."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from atlas_jax.model import init_model
from tests.model.helpers import TINY, loss_and_grad_fn, random_batch, to_numpy


@pytest.fixture(scope="module")
def plain():
    batch = random_batch(batch=2, length=16)
    fn, params = loss_and_grad_fn(init_model(TINY, seed=1))
    (loss, logits), grads = fn(params, batch)
    return batch, float(loss), np.asarray(logits), to_numpy(grads)


def run(cfg, batch):
    fn, params = loss_and_grad_fn(init_model(cfg, seed=1))
    (loss, logits), grads = fn(params, batch)
    return float(loss), np.asarray(logits), to_numpy(grads)


def assert_trees_close(a, b, **tol):
    flat_b = dict(jax.tree.leaves_with_path(b))
    for path, x in jax.tree.leaves_with_path(a):
        np.testing.assert_allclose(x, flat_b[path], err_msg=jax.tree_util.keystr(path), **tol)


@pytest.mark.parametrize("options", [dict(scan_layers=True), dict(remat="full"), dict(remat="save_dots"),
                                     dict(remat="full", scan_layers=True)],
                         ids=["scan", "remat_full", "remat_save_dots", "remat_full_scan"])
def test_scan_and_remat_match_plain(options, plain):
    batch, loss, logits, grads = plain
    # the option really changes the program: a scan loop / a remat (checkpoint) region
    def jaxpr(opts):
        model = init_model(TINY.replace(**opts), seed=1)
        return str(jax.make_jaxpr(lambda ids: model(ids))(batch["input_ids"]))

    def remat_regions(text):
        return text.count("checkpoint[") + text.count("remat")  # remat2[...] in current JAX

    text = jaxpr(options)
    assert ("scan[" in text) == options.get("scan_layers", False)
    if "remat" in options:  # attention remats its query blocks anyway: the option must add regions
        without = {k: v for k, v in options.items() if k != "remat"}
        assert remat_regions(text) > remat_regions(jaxpr(without))
    o_loss, o_logits, o_grads = run(TINY.replace(**options), batch)
    np.testing.assert_allclose(o_loss, loss, rtol=1e-6)
    np.testing.assert_allclose(o_logits, logits, rtol=1e-5, atol=1e-6)
    assert_trees_close(o_grads, grads, rtol=1e-5, atol=1e-7)


def test_bfloat16_compute_is_close_and_params_stay_float32(plain):
    batch, loss, logits, grads = plain
    model = init_model(TINY.replace(dtype="bfloat16"), seed=1)
    assert model.layers.mlp.up_proj.kernel[...].dtype == np.float32
    b_loss, b_logits, b_grads = run(TINY.replace(dtype="bfloat16"), batch)
    assert b_logits.dtype == np.float32  # logits are produced in float32 for the loss
    np.testing.assert_allclose(b_loss, loss, rtol=2e-2)
    assert np.abs(b_logits - logits).max() < 0.05 * np.abs(logits).max()
    for path, g in jax.tree.leaves_with_path(grads):
        b = dict(jax.tree.leaves_with_path(b_grads))[path]
        # relative to each gradient's scale: bf16 keeps ~3 significant digits
        assert np.abs(b - g).max() <= 0.05 * np.abs(g).max() + 1e-6, jax.tree_util.keystr(path)
