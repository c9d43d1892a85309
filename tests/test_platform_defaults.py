"""One platform default for the compute dtype: float32 on CPU (no batched bfloat16 dot in XLA's CPU
backend), bfloat16 on GPU/TPU; used by train's config, and by eval/score when --dtype is not given."""
from atlas_jax.platform_defaults import default_compute_dtype, resolve_dtype


def test_dtype_per_platform():
    assert default_compute_dtype("cpu") == "float32"
    assert default_compute_dtype("gpu") == "bfloat16" and default_compute_dtype("tpu") == "bfloat16"
    assert resolve_dtype(None, "cpu") == ("float32", "platform default on cpu")
    assert resolve_dtype("bfloat16", "cpu") == ("bfloat16", "--dtype")


def test_train_config_default_follows_the_platform():
    from atlas_jax.train.config import ModelSection

    assert ModelSection(init_from="x").dtype == "float32"  # tests run on CPU
    assert ModelSection(init_from="x", dtype="bfloat16").dtype == "bfloat16"
