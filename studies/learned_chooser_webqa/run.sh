#!/usr/bin/env bash
# Regenerates this study: the learned chooser of WebQuestions' best method (the original question x 3 similar
# five-shot blocks, the 10 demonstrations' answers among the candidates) fit on train questions 0-1299, written to
# the shipped configs/chooser_webqa_demos.json, then used on train questions 1300-1799, which it never saw
# (embedded SmolLM2-135M-Instruct; no paraphrases, no hub: ../shared/data/webquestions/train.jsonl).
#   bash studies/learned_chooser_webqa/run.sh     # about 20 min on 2 CPU cores (chooser 12 min, sweep 7.5 min)
#   OUT=/tmp/study REPORTS=/tmp/study CHOOSER=/tmp/study/chooser.json \
#     bash studies/learned_chooser_webqa/run.sh --data.limit 100     # a smaller check (the sweep then still uses the
#                                                                   # shipped file, which its config names)
# Both steps resume and reuse what $OUT (default outputs) already holds; extra arguments go to both. The report
# goes to $REPORTS (default: this folder), the chooser file to $CHOOSER (default: the shipped file, replaced).
HERE=studies/learned_chooser_webqa
source "$(dirname "$0")/../common.sh"
CHOOSER=${CHOOSER:-configs/chooser_webqa_demos.json}

# fit on train 0-1299 at K = 1, M = 3 (prints its 5-fold cross-validated accuracy beside origin and the mixture)
$PY -m selfens_pl chooser --config "$HERE/chooser_webqa_demos.yaml" --output_dir "$OUT/chooser_webqa_demos" \
  --out "$CHOOSER" "$@" | tee "$OUT/chooser_webqa_demos.txt"
# train 1300-1799: the shipped file beside choosers cross-validated on these questions, rescoring with and without
# the demonstrations' answers
$PY -m selfens_pl sweep --config "$HERE/sweep_webqa_heldout.yaml" --output_dir "$OUT/sweep_webqa_heldout" "$@"
cp "$OUT/sweep_webqa_heldout/sweep.md" "$REPORTS/sweep_webqa_heldout.md"
echo "reports in $REPORTS; chooser file $CHOOSER"
