#!/usr/bin/env bash
# Every method on the 200 MyriadLAMA facts of ../shared/data (3 manual paraphrases each) with the embedded model,
# then one report table:  bash scripts/run_myriadlama.sh   (outputs/<config>/ and outputs/report_myriadlama.md)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
runs=()
for name in origin per_prompt avg max flex; do
  $PY -m selfens_pl predict --config "configs/${name}_myriadlama.yaml" --resume false \
    --trainer.enable_progress_bar false
  runs+=("outputs/${name}_myriadlama")
done
$PY -m selfens_pl report "${runs[@]}" --out outputs/report_myriadlama.md --png outputs/report_myriadlama.png
