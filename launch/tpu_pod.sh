#!/usr/bin/env bash
# TPU pod slice: run the same command on every worker over ssh. Each worker is one JAX process;
# atlas-jax sees several TPU workers and calls jax.distributed.initialize(), which discovers
# the pod from the TPU VM metadata. output_dir should be a gs:// bucket or a shared filesystem.
#   launch/tpu_pod.sh TPU_NAME ZONE configs/llama3.1_8b_atlas.yaml model.attention=xla output_dir=gs://b/runs/x
# Assumes atlas-jax is installed on every worker (e.g. `pip install -e .` in ~/atlas-jax).
set -euo pipefail
tpu=${1:?usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG [dotted.key=value ...]}
zone=${2:?zone}
config=${3:?config}
shift 3
workdir=${ATLAS_WORKDIR:-\~/atlas-jax}
printf -v args ' %q' "$@"
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all \
  --command "cd $workdir && ATLAS_DISTRIBUTED=1 atlas-jax train --config $config$args"
