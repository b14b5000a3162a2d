#!/usr/bin/env bash
# The one device check for FlexFusion (run on the lent GPU machine from the repository root):
#   1. compiled flex_attention == dense SDPA mask on CUDA (tiny fp32 Llama: logits and tokens; 3B shape bf16: logits)
#   2. ms/question for origin, logit avg, flex concat and flex shared_prefix at batch 1 and 16, random weights in
#      the Llama-3.2-3B shape, bf16, N=5 paraphrases, T=20 tokens.
# The GPU machine has torch, transformers and lightning; the package itself needs nothing else for these scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
python scripts/gpu_check.py --device cuda
python scripts/bench.py --random-shape llama3.2_3b --tokenizer tiny --device cuda --dtype bfloat16 \
  --backends flex dense --batch-sizes 1 16 --questions 16 --seed-questions 2 ${OUT:+--json "$OUT/bench_gpu.json"}
