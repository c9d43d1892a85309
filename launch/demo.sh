#!/usr/bin/env bash
# The whole ATLaS pipeline on the bundled sample, on CPU (`make demo`; 5.6 min of CPU time: up to ~6 min on 2 idle cores):
#   tokenizer -> base model (short plain SFT from scratch) -> score -> select 30% -> ATLaS train
#   -> export to Hugging Face -> reload with transformers and generate -> show one trajectory's critical steps.
# Everything lands under $DEMO_OUT (default runs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${DEMO_OUT:-runs/demo}
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu} TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore
rm -rf "$out"
mkdir -p "$out"
say() { printf '\n== %s\n' "$*"; }
data=(data/sample/babyai_train.jsonl data/sample/textcraft_train.jsonl)
# Training rows of 2048 tokens (configs/tiny_cpu.yaml has 1024): the sample's trajectories are 840-8650
# tiny-tokenizer tokens (median 1640), their task prompts alone 620-1370. At 2048 the ATLaS run keeps 48 of
# 58 sequences whole and loses 17 of 101 critical steps (at 1024: 19 whole, 70 steps lost, 27 sequences with
# no weighted token left), the plain-SFT base run keeps 33 whole; each trainer's last "data:" line counts what
# it cut. Cost: 5.6 instead of 4.1 min of CPU time for the whole demo.
rows="data.seq_len=2048 data.global_batch_size=2"
say "1/8 tiny tokenizer (byte-level BPE, Llama-3 chat template) -> $out/tokenizer"
python -c "from atlas_jax.data.tiny_tokenizer import build_tiny_tokenizer as b; b('$out/tokenizer')"

say "2/8 base model: 12 steps of plain SFT (every assistant turn) from random init -> $out/base (loss every 3 steps)"
atlas-jax train --config configs/tiny_cpu.yaml output_dir="$out/base" data.tokenizer="$out/tokenizer" $rows \
  data.mask_file=null data.encode.weight_mode=all train.steps=12 train.save_every=0 eval.files=[] \
  train.progress_bar=false train.log_every=3

# --seq-len 4096 holds 53 of the 58 sample trajectories whole (1024 scored only 100 of 411 steps); select
# reports the steps left without a score and refuses a mask that would rest mostly on them
say "3/8 score every step of the training trajectories with the base model -> $out/scores.jsonl"
atlas-jax score --model "$out/base/checkpoints" --tokenizer "$out/tokenizer" --data "${data[@]}" \
  --out "$out/scores.jsonl" --seq-len 4096 --batch-size 4 --variants full \
  --dtype float32   # add --variants full,prompt_only,no_obs for the ifd / obs_dependence metrics (slower)

say "4/8 select 30% critical steps per trajectory from the scores -> $out/mask.jsonl"
atlas-jax select --selector score --ratio 0.3 --combine "nll_mean=1,entropy_mean=1" --data "${data[@]}" \
  --scores "$out/scores.jsonl" --out "$out/mask.jsonl"

say "5/8 ATLaS training: loss on the critical steps only, from the base model -> $out/atlas (loss every 4 steps)"
atlas-jax train --config configs/tiny_cpu.yaml output_dir="$out/atlas" data.tokenizer="$out/tokenizer" $rows \
  data.mask_file="$out/mask.jsonl" model.config=null model.init_from="$out/base/checkpoints" \
  train.progress_bar=false train.log_every=4

say "6/8 export the trained checkpoint to Hugging Face format -> $out/hf"
atlas-jax export --checkpoint "$out/atlas/checkpoints" --out "$out/hf"

say "7/8 reload the export with transformers (PyTorch) and generate an agent turn"
python - "$out/hf" <<'PY'
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
path = sys.argv[1]
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
record = json.loads(open("data/sample/babyai_train.jsonl").readline())
role = {"human": "user", "gpt": "assistant", "system": "system"}
messages = [{"role": role[t["from"]], "content": t["value"]} for t in record["conversations"][:3]]
ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
torch.manual_seed(0)  # sampled: a 0.85M model after 32 CPU steps mostly repeats itself under greedy decoding
with torch.no_grad():
    out = model.generate(**ids, max_new_tokens=48, do_sample=True, top_p=0.9, temperature=0.7,
                         repetition_penalty=1.3, eos_token_id=tok.eos_token_id)
print(f"transformers reloaded {path}: {sum(p.numel() for p in model.parameters()):,} parameters")
print("prompt (last turn):", messages[-1]["content"][:200].replace("\n", " "))
print("generated (sampled, top_p 0.9, T 0.7):", repr(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)))
PY

say "artefacts"
cat <<TXT
  tokenizer         $out/tokenizer
  base model        $out/base/checkpoints   (metrics: $out/base/metrics.jsonl)
  step scores       $out/scores.jsonl
  critical mask     $out/mask.jsonl
  ATLaS checkpoint  $out/atlas/checkpoints  (metrics: $out/atlas/metrics.jsonl, TensorBoard: $out/atlas/tensorboard)
  Hugging Face      $out/hf
TXT

# babyai_421: 5 trainable steps (1 critical at --ratio 0.3) in 1847 tokens: whole at 2048, short enough to read
say "8/8 one trajectory as the ATLaS run saw it: critical steps (the only ones with loss) highlighted"
atlas-jax inspect --data "${data[@]}" --tokenizer "$out/tokenizer" --mask "$out/mask.jsonl" --max-length 2048 \
  --item babyai_421 --limit 1 --color auto
printf '\n== demo done in %d min %02d s (README: up to ~6 min on 2 idle cores)\n' $((SECONDS / 60)) $((SECONDS % 60))
