#!/usr/bin/env bash
# The GPU check, for a developer who is lent one H100: run as is from the repository root, under
# 8 minutes in all (each part is capped: parity 80 s, train_throughput 205 s, atlas_cost 145 s,
# score_throughput 50 s).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # OUT_DIR (default: $OUT or /tmp/gpu_check) gets the JSON files
#
# 1. attention parity on packed batches (2 x 4096, GQA 32/8, bf16, with and without a sliding window):
#    each GPU kernel (cudnn with the explicit mask, pallas_gpu = Triton with segment ids) vs the float32
#    XLA reference: output and gradient errors, forward and forward+backward ms, and which one
#    model.attention=auto picks. If cudnn's fwd+bwd beats pallas_gpu's on packed rows, auto's GPU
#    choice (atlas_jax/model/attention_auto.py) should flip to cudnn: the choice is not yet measured.
# 2. train_throughput, 1B shape: atlas-jax vs torch eager vs torch.compile (target: atlas-jax >= 1.15x
#    torch.compile tokens/s; torch.compile last measured ~48k tokens/s there)
# 3. atlas_cost, 1B shape: one epoch of the bundled sample, all steps (dense / sparse head) vs ATLaS 30%
#    (target: ATLaS-30% epoch <= 0.75x the all-steps dense-head epoch)
# 4. score_throughput, 1B shape
# then one table of the headline figures.
#
# The GPU image has JAX, flax, optax, orbax, transformers and torch but not grain (the input pipeline)
# nor its needs array-record and portpicker, nor tensorboardX. Carry them as wheels: on the machine
# you work on, in the repository root (Python 3.12 x86-64 wheels, no dependencies pulled):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl grain==0.2.18 array-record==0.8.6 portpicker tensorboardX==2.6.5
# then name `.whl` in the device tool's `carry` and run this script: it installs .whl/*.whl into
# /tmp/site first when the folder exists. tensorflow-datasets is needed only to read a prepared TFDS
# ArrayRecord directory (`atlas-jax prepare`), which none of these checks does: leave it out (it and
# its own dependencies are large); to carry it anyway, download tensorflow-datasets with the same
# command plus its Requires-Dist (`unzip -p .whl/tensorflow_datasets-*.whl '*/METADATA' | grep ^Requires-Dist`).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TOKENIZERS_PARALLELISM=false
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
status=0
step() { printf '\n== %s\n' "$1"; shift; timeout "$@" || { echo "FAILED ($?): $*"; status=1; }; }

step "1/4 attention parity (packed rows, each GPU kernel vs XLA)" 80 \
  $py benchmarks/attention_parity.py --repeats 3 --json "$out/parity.json"
step "2/4 train_throughput, 1B shape (atlas-jax vs torch eager vs torch.compile)" 205 \
  $py benchmarks/train_throughput.py --shape 1b --torch-compile --steps 8 --warmup 2 --json "$out/train.json"
step "3/4 atlas_cost, 1B shape (one epoch: all steps vs ATLaS 30%)" 145 \
  $py benchmarks/atlas_cost.py --shape 1b --json "$out/atlas_cost.json"
step "4/4 score_throughput, 1B shape" 50 \
  $py benchmarks/score_throughput.py --shape 1b --json "$out/score.json"

printf '\n== summary\n'
$py - "$out" <<'EOF'
import json, os, sys
out = sys.argv[1]
def load(name):
    path = os.path.join(out, name)
    return json.load(open(path)) if os.path.exists(path) else None
rows = []
parity = load("parity.json")
if parity:
    for r in parity["rows"]:
        rows.append((f"parity {r['kernel']} window={r['window']}" + (" (auto)" if r.get("auto") else ""),
                     f"fwd+bwd {r['fwd_bwd_ms']:.2f} ms",
                     f"err {r['max_abs_err']:.1e} grad {r['grad_rel_err']:.1e} " + ("ok" if r["ok"] else "FAIL")))
train = load("train.json")
if train:
    by = {r["impl"]: r for r in train["rows"]}
    for impl, r in by.items():
        rows.append((f"train {impl}", f"{r['tokens_per_sec']:.0f} tok/s", f"peak {r['peak_mem_gib'] or 0:.1f} GiB"))
    if "torch.compile" in by:
        ratio = by["atlas-jax"]["tokens_per_sec"] / by["torch.compile"]["tokens_per_sec"]
        rows.append(("atlas-jax / torch.compile", f"{ratio:.2f}x", "target >= 1.15"))
cost = load("atlas_cost.json")
if cost:
    for r in cost["rows"]:
        rows.append((f"epoch {r['row']}", f"{r['wall_s']:.1f} s", f"{r['wall_ratio']:.2f}x base"))
    rows.append(("ATLaS 30% / all-steps dense", f"{cost['rows'][2]['wall_ratio']:.2f}x", "target <= 0.75"))
score = load("score.json")
if score:
    for r in score.get("rows", []):
        rows.append((f"score {r.get('impl', '?')}", f"{r.get('tokens_per_sec', 0):.0f} tok/s", ""))
width = max(len(r[0]) for r in rows) if rows else 10
for a, b, c in rows:
    print(f"{a:<{width}} | {b:>16} | {c}")
EOF
exit $status
