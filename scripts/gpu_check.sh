#!/usr/bin/env bash
# The one device check, run on the lent GPU machine from the repository root (about 8 minutes; needs only torch,
# transformers and lightning):
#   1. scripts/gpu_check.py: compiled flex_attention == dense SDPA mask (tiny fp32 Llama: logits and tokens);
#      compiled decoding (CUDA graphs) == eager decoding for every head (tiny fp32 Llama); flex and dense each against
#      a float32 reference of the same weights (random Llama-3.2-3B shape, bf16), flex's error <= 2x dense's.
#   2. scripts/bench.py: one table, random weights in the Llama-3.2-3B shape, bf16, N=5 paraphrases, T=20 tokens:
#      hf_generate_compiled (the floor), origin, logit avg, flex concat / shared_prefix x flex / dense backends, at
#      batch 16, 1 and 64 (64 questions), then the long case (N=10, concat, ~1,000-token few-shot block), with peak
#      GPU memory and graphs compiled per row; rows that would start after --budget-s are listed as skipped.
# Outputs (when $OUT is set): gpu_check.txt, bench_gpu.txt, bench_gpu.json.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD:$PWD/tests:${PYTHONPATH:-}"  # tests/tiny_models.py: the tiny checkpoints PYTHONUNBUFFERED=1
out=${OUT:-$(mktemp -d)}
status=0
python scripts/gpu_check.py --device cuda 2>&1 | tee "$out/gpu_check.txt" || status=1
python scripts/bench.py --random-shape llama3.2_3b --tokenizer tiny --device cuda --dtype bfloat16 \
  --backends flex dense --batch-sizes 16 1 64 --questions 64 --seed-questions 0 --long --long-batch-sizes 1 4 \
  --budget-s "${BENCH_BUDGET_S:-330}" --json "$out/bench_gpu.json" 2>&1 | tee "$out/bench_gpu.txt" || status=1
echo "gpu_check.sh: $([ $status = 0 ] && echo PASS || echo FAIL) (outputs in $out)"
exit $status
