#!/usr/bin/env bash
# One host, several GPUs: a single JAX process drives all visible GPUs; the mesh in the config
# (fsdp=-1 by default) spreads parameters and batch over them.
#   CUDA_VISIBLE_DEVICES=0,1,2,3 launch/multi_gpu.sh configs/llama3.1_8b_atlas.yaml [key=value ...]
set -euo pipefail
config=${1:?usage: launch/multi_gpu.sh CONFIG [dotted.key=value ...]}; shift
# Let XLA keep most of the GPU memory and use the fast collective / latency-hiding paths.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
ngpu=$(python -c "import jax; print(jax.local_device_count())")
echo "launch: 1 process, $ngpu GPUs" >&2
exec atlas-jax train --config "$config" "$@"
