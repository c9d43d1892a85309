"""The fused kernels (splash, Pallas GPU) against the XLA reference on packed rows, run on CPU in
Pallas interpret mode; ``model.attention=auto``'s decisions; the CPU default stays blockwise XLA."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atlas_jax.convert.checkpoint import load_hf
from atlas_jax.model import attention_pallas
from atlas_jax.model.attention import attention_mask, causal_attention, resolve_attention, xla_attention
from atlas_jax.model.attention_auto import choose_attention
from atlas_jax.model.config import ATTENTION_IMPLS, ModelConfig
from atlas_jax.sharding import MeshConfig, build_mesh, use_mesh

T = 256  # two 128-token tiles (splash forced to 128 below): tile skipping and segments crossing tiles
BF16, F32 = jnp.bfloat16, jnp.float32


@pytest.mark.parametrize("platform, packed, window, dtype, seq_len, expected", [
    ("cpu", True, None, F32, 4096, "xla"),
    ("cpu", False, None, BF16, 4096, "xla"),
    ("cpu", True, 4096, BF16, 4096, "xla"),
    ("tpu", True, None, BF16, 4096, "splash"),
    ("tpu", False, 4096, BF16, 4096, "splash"),
    ("tpu", True, None, BF16, 1000, "xla"),  # not a multiple of the 128 tile
    ("gpu", False, None, BF16, 4096, "cudnn"),  # fused causal kernel
    ("gpu", False, 2048, BF16, 4096, "cudnn"),  # cuDNN's own sliding window
    ("gpu", False, 2048, F32, 4096, "xla"),  # no kernel has it: cuDNN is 16-bit, Triton has no window
    ("gpu", False, None, F32, 4096, "xla"),  # cuDNN needs 16-bit; Triton (pallas_gpu) is opt-in
    ("gpu", True, None, BF16, 4096, "cudnn"),  # explicit mask: pallas_gpu has not run on a GPU yet
    ("gpu", True, None, BF16, 1000, "cudnn"),
    ("gpu", True, 2048, BF16, 4096, "cudnn"),
    ("gpu", True, 2048, F32, 4096, "xla"),  # neither kernel fits
])
def test_auto_decisions(platform, packed, window, dtype, seq_len, expected):
    assert choose_attention(platform, packed=packed, sliding_window=window, dtype=dtype, seq_len=seq_len) == expected


def test_config_accepts_every_kernel_and_defaults_to_auto():
    cfg = ModelConfig(model_type="llama", vocab_size=8, hidden_size=8, intermediate_size=8, num_layers=1,
                      num_heads=2, num_kv_heads=1, head_dim=4)
    assert cfg.attention == "auto"
    for name in ATTENTION_IMPLS:
        assert cfg.replace(attention=name).attention == name
    with pytest.raises(ValueError, match="attention='flash'; expected one of auto, xla, cudnn, pallas_gpu, splash"):
        cfg.replace(attention="flash")


def packed_inputs(seed: int = 0, kv_heads: int = 2):
    """Two rows: sequences of 60, 140, 30 then 26 padding; 150, 70 then 36 padding. GQA 4/2."""
    rng = np.random.RandomState(seed)
    segments, positions = np.zeros((2, T), np.int32), np.zeros((2, T), np.int32)
    for r, lengths in enumerate(((60, 140, 30), (150, 70))):
        start = 0
        for s, n in enumerate(lengths, start=1):
            segments[r, start:start + n], positions[r, start:start + n] = s, np.arange(n)
            start += n
    q = jnp.asarray(rng.randn(2, T, 4, 32), F32)
    k, v = (jnp.asarray(rng.randn(2, T, kv_heads, 32), F32) for _ in "kv")
    cotangent = jnp.asarray(rng.randn(2, T, 4, 32) * (segments > 0)[:, :, None, None], F32)  # no loss on padding
    return q, k, v, jnp.asarray(positions), jnp.asarray(segments), cotangent


def reference_and_kernel(kernel, packed, window, kv_heads=2):
    q, k, v, positions, segments, cotangent = packed_inputs(kv_heads=kv_heads)
    if not packed:
        positions, segments = jnp.broadcast_to(jnp.arange(T), (2, T)), None
        cotangent = jnp.asarray(np.random.RandomState(1).randn(2, T, 4, 32), F32)

    def reference(q, k, v):
        mask = attention_mask(positions, positions, segments, segments, window)
        return jnp.sum(xla_attention(q, k, v, mask) * cotangent), xla_attention(q, k, v, mask)

    def fused(q, k, v):
        out = causal_attention(q, k, v, positions_BxT=positions, segment_ids_BxT=segments, sliding_window=window,
                               implementation=kernel)
        return jnp.sum(out * cotangent), out

    grad = lambda f: jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))  # noqa: E731
    return grad(reference)(q, k, v), grad(fused)(q, k, v), segments


@pytest.fixture(autouse=True)
def small_splash_tiles(monkeypatch):
    monkeypatch.setattr(attention_pallas, "SPLASH_BLOCKS", (128,))


@pytest.mark.parametrize("kernel, packed, window, kv_heads", [
    ("splash", True, None, 2), ("splash", True, 40, 2), ("splash", False, None, 4),
    ("pallas_gpu", True, None, 2), ("pallas_gpu", False, None, 1),
], ids=["splash-packed-gqa", "splash-packed-window", "splash-unpacked-mha", "pallas_gpu-packed-gqa",
        "pallas_gpu-unpacked-mqa"])
def test_kernel_matches_reference(kernel, packed, window, kv_heads):
    """Output on real tokens and every gradient (loss on real tokens only) equal the reference's."""
    ((_, ref_out), ref_grads), ((_, out), grads), segments = reference_and_kernel(
        kernel, packed, window, kv_heads)
    real = np.ones((2, T), bool) if segments is None else np.asarray(segments) > 0
    np.testing.assert_allclose(np.asarray(out)[real], np.asarray(ref_out)[real], atol=2e-5, rtol=1e-5)
    for name, g, r in zip("qkv", grads, ref_grads):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=5e-5, rtol=1e-4, err_msg=f"d{name}")


def test_kernels_refuse_what_they_cannot_do():
    q, k, v, positions, segments, _ = packed_inputs()
    with pytest.raises(ValueError, match="no sliding window"):
        causal_attention(q, k, v, positions_BxT=positions, segment_ids_BxT=segments, sliding_window=8,
                         implementation="pallas_gpu")
    for kernel in ("pallas_gpu", "splash"):
        with pytest.raises(ValueError, match=f"{kernel}: sequence length 200 must be a multiple of 128"):
            causal_attention(q[:, :200], k[:, :200], v[:, :200], positions_BxT=positions[:, :200],
                             segment_ids_BxT=segments[:, :200], sliding_window=None, implementation=kernel)


def test_auto_on_cpu_is_the_blockwise_reference():
    q, k, v, positions, segments, _ = packed_inputs()
    assert jax.default_backend() == "cpu"
    assert resolve_attention("auto", q.astype(BF16), segments, None) == "xla"
    run = lambda impl: np.asarray(jax.jit(lambda q, k, v: causal_attention(  # noqa: E731
        q, k, v, positions_BxT=positions, segment_ids_BxT=segments, sliding_window=None, implementation=impl))(q, k, v))
    np.testing.assert_array_equal(run("auto"), run("xla"))


@pytest.mark.parametrize("kernel", ["splash", "pallas_gpu"])
def test_kernel_under_a_mesh_equals_one_device(kernel):
    """Under a data x tensor mesh the Pallas call runs per shard (batch and heads split)."""
    q, k, v, positions, segments, _ = packed_inputs()
    fn = jax.jit(lambda q, k, v, s: causal_attention(q, k, v, positions_BxT=positions, segment_ids_BxT=s,
                                                     sliding_window=None, implementation=kernel))
    single = np.asarray(fn(q, k, v, segments))
    mesh = build_mesh(MeshConfig(data=2, fsdp=1, tensor=2, num_devices=4))
    with use_mesh(mesh):
        sharded = jax.jit(lambda q, k, v, s: causal_attention(q, k, v, positions_BxT=positions, segment_ids_BxT=s,
                                                              sliding_window=None, implementation=kernel))
        out = sharded(q, k, v, segments)
    assert len(out.sharding.device_set) == 4
    np.testing.assert_allclose(np.asarray(out), single, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("family, kernel", [("mistral", "splash"), ("llama", "pallas_gpu")])
def test_model_with_kernel_matches_xla_on_packed_rows(family, kernel, hf_dirs):
    """The whole model (2 layers, GQA; mistral: sliding window 5) with the kernel wired in."""
    rng = np.random.RandomState(5)
    lengths = ((40, 70), (5, 3, 100))  # the tiny models' 128 positions, one tile, padding at the ends
    tokens, segments, positions = (np.zeros((2, 128), np.int32) for _ in range(3))
    for r, row in enumerate(lengths):
        start = 0
        for s, n in enumerate(row, start=1):
            tokens[r, start:start + n] = rng.randint(0, 256, n)
            segments[r, start:start + n], positions[r, start:start + n] = s, np.arange(n)
            start += n
    args = [jnp.asarray(x) for x in (tokens, positions, segments)]
    logits = {}
    for impl in ("xla", kernel):
        model = load_hf(hf_dirs[family], dtype="float32", attention=impl)
        logits[impl] = np.asarray(jax.jit(lambda t, p, s: model(t, p, s))(*args))
    real = segments > 0
    np.testing.assert_allclose(logits[kernel][real], logits["xla"][real], atol=2e-5, rtol=1e-5)
