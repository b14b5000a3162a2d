#!/usr/bin/env bash
# Regenerates this study's reports: six slices of 500 WebQuestions train questions, each paraphrased by `paraphrase`
# with the same settings and swept with every head (embedded SmolLM2-135M-Instruct; similar blocks from the train
# split). About 8-9 hours on 2 CPU cores from scratch (6 x 15-35 min paraphrasing, 9 sweeps of 9-75 min).
#   bash studies/webqa_slices/run.sh
#   OUT=/tmp/study REPORTS=/tmp/study bash studies/webqa_slices/run.sh --data.limit 100   # a smaller check
# Every step resumes and reuses what $OUT (default outputs) already holds; extra arguments (flags both `paraphrase`
# and `sweep` take: --data.limit, --model.model, --trainer.accelerator, ...) go to every step. Reports go to
# $REPORTS (default: this folder). A rerun uses today's defaults: the slices swept before origin_share "auto" meant
# 0.9 (the first five) were measured at 0.5; their configs' _origin0.5 and _equal rows reproduce those figures.
HERE=studies/webqa_slices
source "$(dirname "$0")/../common.sh"
P=$OUT/paraphrases
mkdir -p "$P"

paraphrase() {  # config slice
  $PY -m selfens_pl paraphrase --config "$HERE/$1" --output "$P/webquestions-train-$2.jsonl" "${EXTRA[@]}"
}
sweep() {  # config slice output-name report [flags]
  local config=$1 slice=$2 name=$3 report=$4; shift 4
  $PY -m selfens_pl sweep --config "$HERE/$config" --data.path "$P/webquestions-train-$slice.jsonl" \
    --output_dir "$OUT/$name" "$@" "${EXTRA[@]}"
  cp "$OUT/$name/sweep.md" "$REPORTS/$report"
}
EXTRA=("$@")

# the six slices' checked paraphrases (original question + up to 4 each)
paraphrase paraphrase_webqa_sweep.yaml 300-799
paraphrase paraphrase_webqa_check.yaml 800-1299
paraphrase paraphrase_webqa_heldout.yaml 1300-1799
paraphrase paraphrase_webqa_confirm.yaml 1800-2299
paraphrase paraphrase_webqa_fifth.yaml 2300-2799
paraphrase paraphrase_webqa_sixth.yaml 2800-3299

# slice 1 (300-799): every method with similar blocks, with random blocks, with the demonstrations' answers
sweep sweep_webqa.yaml 300-799 sweep_webqa sweep_webqa.md
sweep sweep_webqa_random.yaml 300-799 sweep_webqa_random sweep_webqa_random.md
sweep sweep_webqa_demos.yaml 300-799 sweep_webqa_demos sweep_webqa_demos.md
# slice 2 (800-1299): every method of the two above, a slice no earlier sweep looked at
sweep sweep_webqa_check.yaml 800-1299 sweep_webqa_check sweep_webqa_check.md
# slices 4-6 (1800-3299): every head at its defaults (beside _equal and _origin0.5), the choosers, similar blocks
sweep sweep_webqa_confirm.yaml 1800-2299 sweep_webqa_confirm sweep_webqa_confirm.md
sweep sweep_webqa_confirm.yaml 2300-2799 sweep_webqa_fifth sweep_webqa_fifth.md
sweep sweep_webqa_confirm.yaml 2800-3299 sweep_webqa_sixth sweep_webqa_sixth.md
# the defaults without blocks on slice 1, and on the first four slices pooled (2,000 questions)
sweep sweep_webqa_confirm.yaml 300-799 sweep_webqa_default_300 sweep_webqa_default_300.md --ms 1
cat "$P"/webquestions-train-{300-799,800-1299,1300-1799,1800-2299}.jsonl > "$P/webquestions-train-300-2299.jsonl"
sweep sweep_webqa_confirm.yaml 300-2299 sweep_webqa_default_pooled sweep_webqa_default_pooled.md --ms 1
echo "reports in $REPORTS"
