#!/usr/bin/env bash
# Regenerates this study: does the best method (the original question x 3 similar five-shot blocks, every candidate
# rescored under every member, a learned chooser) beat the strongest control (kNN single prompt, copy of the
# nearest demonstration's answer or their vote, self-consistency at a matched budget)? WebQuestions' fresh train
# slice (3300-3777) and the 800 shipped MyriadLAMA facts, embedded SmolLM2-135M-Instruct, no hub.
#   bash studies/beat_the_control/run.sh      # about 2 h 40 min on 2 CPU cores from scratch
# Each sweep resumes and reuses what $OUT (default outputs) already holds; extra arguments go to both sweeps. The
# reports go to $REPORTS (default: this folder): each sweep's sweep.md and the chooser variants' tables.
HERE=studies/beat_the_control
source "$(dirname "$0")/../common.sh"

for name in webqa_fresh myriadlama; do
  config="$HERE/sweep_$name.yaml"
  $PY -m selfens_pl sweep --config "$config" --output_dir "$OUT/beat_the_control/$name" "$@"
  cp "$OUT/beat_the_control/$name/sweep.md" "$REPORTS/sweep_$name.md"
  # every chooser variant (standard / rich features x logistic / boosting), cross-validated on the same facts
  $PY scripts/chooser_variants.py "$config" --output_dir "$OUT/beat_the_control/$name" | tee "$REPORTS/variants_$name.md"
done
echo "reports in $REPORTS"
