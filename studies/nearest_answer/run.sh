#!/usr/bin/env bash
# Regenerates nearest_answer_baseline.md: how much of what similar demonstration blocks gain is a demonstration's
# answer copied, a baseline with no model (scripts/nearest_answer_baseline.py), against every run of six sweeps.
#   bash studies/nearest_answer/run.sh
# The baseline itself takes seconds; the sweeps it compares with are the other studies' (run here first, each
# reusing every fact studies/myriadlama_sweep/run.sh, studies/webqa_slices/run.sh and
# studies/learned_chooser_webqa/run.sh wrote under outputs/; from scratch about 3 hours on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
HERE=studies/nearest_answer
P=outputs/paraphrases

$PY -m selfens_pl paraphrase --config studies/webqa_slices/paraphrase_webqa_sweep.yaml \
  --output "$P/webquestions-train-300-799.jsonl" >&2
$PY -m selfens_pl paraphrase --config studies/webqa_slices/paraphrase_webqa_check.yaml \
  --output "$P/webquestions-train-800-1299.jsonl" >&2

section() {  # heading config output-name [script flags]
  local heading=$1 config=$2 name=$3; shift 3
  $PY -m selfens_pl sweep --config "$config" --output_dir "outputs/$name" >&2
  printf '## %s\n\n```bash\n' "$heading"
  echo "python scripts/nearest_answer_baseline.py $config $* --runs outputs/$name/runs" | tr -s ' '
  printf '```\n\n'
  $PY scripts/nearest_answer_baseline.py "$config" "$@" --runs "outputs/$name/runs"
  echo
}
{
  echo "# Copying a demonstration's answer: the baseline with no model"
  echo
  echo "\`scripts/nearest_answer_baseline.py\` on the groups and blocks of the sweeps below (one data section per" \
       "dataset; block 1's first demonstration is the pool question most similar to the group's question under" \
       "\`similar\`). Every gain: paired bootstrap 95% interval, 2,000 resamples of the facts, seed 0."
  echo
  section "MyriadLAMA, 800 shipped facts (pool: the other shipped facts)" \
    studies/myriadlama_sweep/sweep_wider_myriadlama.yaml sweep_wider_myriadlama
  section "WebQuestions, train questions 300-799 (pool: the train split, never the question itself)" \
    studies/webqa_slices/sweep_webqa.yaml sweep_webqa
  section "MyriadLAMA, 800 shipped facts, with the demonstrations' answers as candidates" \
    studies/myriadlama_sweep/sweep_demos_myriadlama.yaml sweep_demos_myriadlama --selection similar
  section "WebQuestions, train questions 300-799, with the demonstrations' answers as candidates" \
    studies/webqa_slices/sweep_webqa_demos.yaml sweep_webqa_demos --selection similar
  section "WebQuestions, train questions 800-1299 (the checking slice), every method" \
    studies/webqa_slices/sweep_webqa_check.yaml sweep_webqa_check
  section "WebQuestions, train questions 1300-1799, the chooser fit on 0-1299 (configs/chooser_webqa_demos.json)" \
    studies/learned_chooser_webqa/sweep_webqa_heldout.yaml sweep_webqa_heldout --selection similar
} > "$HERE/nearest_answer_baseline.md.tmp"
mv "$HERE/nearest_answer_baseline.md.tmp" "$HERE/nearest_answer_baseline.md"
echo "report: $HERE/nearest_answer_baseline.md"
