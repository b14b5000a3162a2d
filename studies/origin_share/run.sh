#!/usr/bin/env bash
# Regenerates this study's reports: the original question's share (origin_share) on WebQuestions train slices with
# generated paraphrases (embedded SmolLM2-135M-Instruct, similar blocks from the train split).
#   bash studies/origin_share/run.sh           # about 2 h 30 min on 2 CPU cores from scratch, minutes once
#                                              # studies/webqa_slices/run.sh has run (every fact reused)
#   OUT=/tmp/study REPORTS=/tmp/study bash studies/origin_share/run.sh --data.limit 100   # a smaller check
# Every step resumes and reuses what $OUT (default outputs) already holds; extra arguments (flags `paraphrase`,
# `sweep` and scripts/origin_share_grid.py all take) go to every step. Reports go to $REPORTS (default: this folder).
HERE=studies/origin_share
source "$(dirname "$0")/../common.sh"
SLICES=studies/webqa_slices
P=$OUT/paraphrases
mkdir -p "$P"

# the paraphrases of the four slices used here (studies/webqa_slices/ writes the same files)
for s in sweep:300-799 check:800-1299 heldout:1300-1799 fifth:2300-2799; do
  $PY -m selfens_pl paraphrase --config "$SLICES/paraphrase_webqa_${s%%:*}.yaml" \
    --output "$P/webquestions-train-${s#*:}.jsonl" "$@"
done

# every rule with and without the share 0.5 on train 1300-1799 (set before this slice was run), then on 800-1299
$PY -m selfens_pl sweep --config "$HERE/sweep_webqa_origin_share.yaml" \
  --data.path "$P/webquestions-train-1300-1799.jsonl" --output_dir "$OUT/sweep_webqa_origin_share" "$@"
cp "$OUT/sweep_webqa_origin_share/sweep.md" "$REPORTS/sweep_webqa_origin_share.md"
$PY -m selfens_pl sweep --config "$HERE/sweep_webqa_origin_share.yaml" --ms 1 \
  --data.path "$P/webquestions-train-800-1299.jsonl" --output_dir "$OUT/sweep_webqa_origin_share_check" "$@"
cp "$OUT/sweep_webqa_origin_share_check/sweep.md" "$REPORTS/sweep_webqa_origin_share_check.md"

# the derived heads at shares 0.5-0.9 on the two slices the default 0.9 was chosen on, from their sweeps' engine
# rows (each sweep is run first: it reuses every fact studies/webqa_slices/run.sh wrote)
grid() {  # slice output-name [flags]
  local slice=$1 name=$2; shift 2
  local flags=(--config "$SLICES/sweep_webqa_confirm.yaml" --data.path "$P/webquestions-train-$slice.jsonl"
               --output_dir "$OUT/$name" "$@")
  $PY -m selfens_pl sweep "${flags[@]}" >&2
  $PY scripts/origin_share_grid.py "${flags[@]}"
}
{
  echo "# The derived heads at several origin_share values, on two development slices"
  echo
  echo "\`scripts/origin_share_grid.py\` over the engine rows of the sweeps of \`studies/webqa_slices/\` (each cell:" \
       "the head's own decision at that share, its gain over origin with the paired bootstrap 95% interval, 2,000" \
       "resamples, seed 0). These two slices chose the default share for generated paraphrases (0.9," \
       "\`selfens_pl/data/origin_share.py\`); a sixth slice judged it (\`studies/origin_share/README.md\`)."
  echo
  echo "## Train questions 2300-2799 (the fifth slice)"
  echo
  echo "    python scripts/origin_share_grid.py --config $SLICES/sweep_webqa_confirm.yaml \\"
  echo "        --data.path $P/webquestions-train-2300-2799.jsonl --output_dir $OUT/sweep_webqa_fifth"
  echo
  grid 2300-2799 sweep_webqa_fifth "$@"
  echo
  echo "## Train questions 300-799 (the first slice, M = 1)"
  echo
  echo "    python scripts/origin_share_grid.py --config $SLICES/sweep_webqa_confirm.yaml --ms 1 \\"
  echo "        --data.path $P/webquestions-train-300-799.jsonl --output_dir $OUT/sweep_webqa_default_300"
  echo
  grid 300-799 sweep_webqa_default_300 --ms 1 "$@"
} > "$REPORTS/origin_share_grid.md.tmp"
mv "$REPORTS/origin_share_grid.md.tmp" "$REPORTS/origin_share_grid.md"
echo "reports in $REPORTS"
