#!/usr/bin/env bash
# Regenerates results.md: multiple choice on the shipped MyriadLAMA file (selfens_pl/resources/choice_myriadlama.jsonl,
# 300 facts, 4 options each), embedded SmolLM2-135M-Instruct: the self-ensemble over the 3 manual paraphrases (and
# over 3 paraphrases x 3 five-shot blocks) against one prompt, every fusion rule, and the same members fused at
# the attention level (one sequence), paired bootstrap 95% intervals.
#   bash studies/multiple_choice/run.sh                                  # about 65 min on 2 CPU cores
#   OUT=/tmp/study REPORTS=/tmp/study bash studies/multiple_choice/run.sh --data.limit 40   # a smaller check
# Each run resumes what $OUT (default outputs) already holds; extra arguments go to every predict.
HERE=studies/multiple_choice
source "$(dirname "$0")/../common.sh"

$PY -m selfens_pl predict --config configs/choice_origin_myriadlama.yaml --output_dir "$OUT/choice_origin_myriadlama" "$@"
$PY -m selfens_pl predict --config configs/choice_myriadlama.yaml --output_dir "$OUT/choice_myriadlama" "$@"
$PY -m selfens_pl predict --config configs/choice_myriadlama.yaml --output_dir "$OUT/choice_blocks_myriadlama" \
  --data.demo_blocks 3 --data.few_shot_pool '[../shared/data/myriadlama/dev.jsonl,../shared/data/myriadlama/dev600.jsonl]' "$@"
# attention-level fusion: each option scored once on the members' fused sequence (ChoiceHead fuse: attention)
$PY -m selfens_pl predict --config configs/choice_myriadlama.yaml --output_dir "$OUT/choice_attention_myriadlama" \
  --model.head.init_args.fuse attention "$@"
$PY -m selfens_pl predict --config configs/choice_myriadlama.yaml --output_dir "$OUT/choice_attention_blocks_myriadlama" \
  --model.head.init_args.fuse attention --data.demo_blocks 3 \
  --data.few_shot_pool '[../shared/data/myriadlama/dev.jsonl,../shared/data/myriadlama/dev600.jsonl]' "$@"
$PY "$HERE/table.py" "$OUT/choice_origin_myriadlama" "$OUT/choice_myriadlama" "$OUT/choice_blocks_myriadlama" \
  "$OUT/choice_attention_myriadlama" "$OUT/choice_attention_blocks_myriadlama" > "$REPORTS/results.md.tmp"
mv "$REPORTS/results.md.tmp" "$REPORTS/results.md"
echo "report: $REPORTS/results.md"
