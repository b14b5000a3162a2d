#!/usr/bin/env bash
# Regenerates this study's reports: the prompt as the reference code's Q:/A: text (--data.chat_template none) against
# the model's chat template (model), embedded SmolLM2-135M-Instruct, greedy: origin and the best cheap method on the
# 800 shipped MyriadLAMA facts, origin and the recommended method on WebQuestions train questions 1300-1599.
#   bash studies/chat_template/run.sh            # about 1 h 45 min on 2 CPU cores (two runs at a time: 1 h)
#   OUT=/tmp/study REPORTS=/tmp/study bash studies/chat_template/run.sh --data.limit 50   # a smaller check
# A finished run is not run again (delete its folder to redo it); extra arguments go to every predict. Reports go
# to $REPORTS (default: this folder): report_<data>.md (every run's accuracy) and gains_<data>.md (each method with
# the template against without it, paired bootstrap 95% intervals, 2,000 resamples, seed 0).
HERE=studies/chat_template
source "$(dirname "$0")/../common.sh"
R=$OUT/chat_template
mkdir -p "$R"

predict() {  # config mode [flags]
  local config=$1 mode=$2; shift 2
  if [ ! -f "$R/${config}_$mode/summary.json" ]; then
    $PY -m selfens_pl predict --config "$HERE/$config.yaml" --data.chat_template "$mode" \
      --output_dir "$R/${config}_$mode" "$@"
  fi
}

for data in myriadlama webqa; do
  for config in origin_$data rerank_demos_$data; do
    predict "$config" none "$@"
    predict "$config" model "$@"
  done
  $PY -m selfens_pl report "$R"/{origin,rerank_demos}_${data}_{none,model} --out "$REPORTS/report_$data.md"
  { $PY scripts/paired_gains.py "$R/origin_${data}_none" "$R/origin_${data}_model"
    echo
    $PY scripts/paired_gains.py "$R/rerank_demos_${data}_none" "$R/rerank_demos_${data}_model"
  } > "$REPORTS/gains_$data.md"
done
echo "reports in $REPORTS"
