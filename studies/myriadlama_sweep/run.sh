#!/usr/bin/env bash
# Regenerates this study's reports: every method over K paraphrases x M five-shot blocks on the 800 shipped
# MyriadLAMA facts (../shared/data/myriadlama/dev.jsonl + dev600.jsonl), embedded SmolLM2-135M-Instruct.
#   bash studies/myriadlama_sweep/run.sh                  # the whole study: about 2 h 10 min on 2 CPU cores
#   OUT=/tmp/study REPORTS=/tmp/study bash studies/myriadlama_sweep/run.sh --data.limit 100   # a smaller check
# Every sweep resumes and reuses what $OUT (default outputs) already holds; extra arguments go to every sweep and
# to the chooser. Reports go to $REPORTS (default: this folder).
HERE=studies/myriadlama_sweep
source "$(dirname "$0")/../common.sh"

sweep() {  # config output-name [flags]
  local config=$1 name=$2; shift 2
  $PY -m selfens_pl sweep --config "$HERE/$config" --output_dir "$OUT/$name" "$@"
}

# 1. every method, K in {1, 3, 6} x M in {1, 3}, random blocks: the charts, and the confidence report on its runs
sweep sweep_myriadlama.yaml sweep_myriadlama "$@"
cp "$OUT/sweep_myriadlama/sweep.png" "$REPORTS/sweep_myriadlama.png"
cp "$OUT/sweep_myriadlama/sweep_cost.png" "$REPORTS/sweep_myriadlama_cost.png"
runs=$OUT/sweep_myriadlama/runs
$PY -m selfens_pl report "$runs/origin_k1_m1" "$runs/per_prompt_k6_m3" "$runs/vote_k6_m3" \
  "$runs/entropy_weighted_k6_m3" "$runs/rerank_mixture_k3_m3" "$runs/rerank_max_k6_m3" --confidence agreement \
  --out "$REPORTS/report_sweep_m3.md"
# 2. the learned chooser fit on the same facts (3 manual paraphrases x 3 random blocks) and its cross-validated table
$PY -m selfens_pl chooser --config "$HERE/chooser_myriadlama.yaml" --output_dir "$OUT/chooser_myriadlama" \
  --out "$OUT/chooser_myriadlama/chooser.json" "$@" | tee "$OUT/chooser_myriadlama.txt"
# 3. similar blocks against random blocks: the rescoring rules and the cross-validated chooser, K, M in {1, 3}
sweep sweep_similar_myriadlama.yaml sweep_similar_myriadlama "$@"
cp "$OUT/sweep_similar_myriadlama/sweep.md" "$REPORTS/sweep_similar_k3m3.md"
sweep sweep_similar_myriadlama.yaml sweep_random_myriadlama --data.demo_selection random "$@"
cp "$OUT/sweep_random_myriadlama/sweep.md" "$REPORTS/sweep_random_k3m3.md"
# 4. wider candidates (first_tokens 3) and the demonstrations' answers as candidates, similar blocks
sweep sweep_wider_myriadlama.yaml sweep_wider_myriadlama "$@"
cp "$OUT/sweep_wider_myriadlama/sweep.md" "$REPORTS/sweep_wider_myriadlama.md"
sweep sweep_demos_myriadlama.yaml sweep_demos_myriadlama "$@"
cp "$OUT/sweep_demos_myriadlama/sweep.md" "$REPORTS/sweep_demos_myriadlama.md"
echo "reports in $REPORTS"
