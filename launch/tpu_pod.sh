#!/usr/bin/env bash
# TPU pod slice: run the same command on every worker over ssh. Each worker is one JAX process;
# atlas-jax sees several TPU workers and calls jax.distributed.initialize(), which discovers
# the pod from the TPU VM metadata.
#   launch/tpu_pod.sh TPU_NAME ZONE configs/llama3.1_8b_atlas.yaml model.attention=xla output_dir=gs://b/runs/x
# Assumes atlas-jax is installed on every worker with its GCS extra (`pip install -e '.[gcs]'` in ~/atlas-jax).
#
# Storage: output_dir must be a gs:// URL (or a filesystem every worker mounts); a plain local path would
# scatter the run over the workers' disks. Every worker writes its own checkpoint shards straight to the
# bucket (Orbax/TensorStore); worker 0 writes config.json and uploads metrics.jsonl + TensorBoard events
# every 30 s and at the end. Inputs may be gs:// too: data.train_files, data.mask_file, data.tokenizer,
# model.init_from. Credentials: the TPU VM's service account (Application Default Credentials).
# Preemption: a maintenance event or spot preemption sends SIGTERM, possibly to one worker only; every worker
# stops after the same step, they save that step together and exit 0. Rerun this script with the same
# output_dir to resume; it may be a slice of another size (see README, "Pods and clusters").
set -euo pipefail
tpu=${1:?usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG [dotted.key=value ...]}
zone=${2:?zone}
config=${3:?config}
shift 3
for arg in "$@"; do
  case $arg in
    output_dir=gs://*|output_dir=/mnt/*|output_dir=/gcs/*) ;;
    output_dir=*) echo "warning: $arg is not a gs:// URL: each worker would write to its own disk" >&2 ;;
  esac
done
workdir=${ATLAS_WORKDIR:-\~/atlas-jax}
printf -v args ' %q' "$@"
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all \
  --command "cd $workdir && ATLAS_DISTRIBUTED=1 atlas-jax train --config $config$args"
