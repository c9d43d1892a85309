#!/usr/bin/env bash
# Train on this machine: the CPU, or every local GPU (one process sees them all).
#   launch/local.sh configs/tiny_cpu.yaml [dotted.key=value ...]
set -euo pipefail
config=${1:?usage: launch/local.sh CONFIG [dotted.key=value ...]}; shift
exec atlas-jax train --config "$config" "$@"
