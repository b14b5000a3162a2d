#!/usr/bin/env bash
# Regenerates report_demo.md / report_demo.png: origin, per_prompt, LogitFusion avg and FlexFusion (concat,
# shared_prefix) on the shipped demo set (40 WebQuestions train questions, 5 hand-written paraphrases each),
# embedded SmolLM2-135M-Instruct, each with its user preset in configs/.
#   bash studies/demo_set/run.sh                                    # a few minutes on 2 CPU cores
#   OUT=/tmp/study REPORTS=/tmp/study bash studies/demo_set/run.sh  # elsewhere
# Every run answers afresh (--resume false), so the report's questions/s are this machine's; extra arguments go to
# every predict (--trainer.accelerator gpu ...).
HERE=studies/demo_set
source "$(dirname "$0")/../common.sh"

runs=()
for method in origin per_prompt avg flex flex_shared_prefix; do
  $PY -m selfens_pl predict --config "configs/${method}_webqa.yaml" --output_dir "$OUT/${method}_webqa" \
    --resume false "$@"
  runs+=("$OUT/${method}_webqa")
done
$PY -m selfens_pl report "${runs[@]}" --out "$REPORTS/report_demo.md" --png "$REPORTS/report_demo.png" \
  --coverage_png "$OUT/report_demo_coverage.png"
echo "report: $REPORTS/report_demo.md"
