#!/usr/bin/env bash
# The paraphrase study (studies/paraphrase_checks/: its README and run.sh), embedded model, CPU:
#   dev:      WebQuestions train questions 200-299: temperature 0.5 / 0.7 / 1.0 / 1.5 (top_p 0.9) -> acceptance and
#             the accuracy of origin, avg and max over the checked paraphrases (and avg over the unchecked samples
#             at 1.5, the reference code's setting); the temperature is chosen here.
#   held-out: the first 200 train questions at the chosen temperature, default checks: origin, per_prompt, avg,
#             max, prob_avg, entropy_weighted, vote, flex shared_prefix.
# Every step resumes or reuses what is already written. Then: python scripts/paraphrase_table.py
#   bash scripts/paraphrase_study.sh dev            # the temperature sweep
#   bash scripts/paraphrase_study.sh heldout 1.0    # the held-out table at temperature 1.0
set -euo pipefail
PY=${PYTHON:-python}
OUT=${OUT:-outputs/paraphrase_study}
TRAIN=../shared/data/webquestions/train.jsonl
TOP_P=0.9

paraphrase() {  # name start limit temperature [extra flags]
  local name=$1 start=$2 limit=$3 t=$4; shift 4
  /usr/bin/time -f "[study] paraphrase $name: %e s wall" $PY -m selfens_pl paraphrase \
    --config configs/paraphrase_webqa.yaml --data.start "$start" --data.limit "$limit" --temperature "$t" --top_p $TOP_P \
    --output "$OUT/$name.jsonl" --data.batch_size 32 "$@"
}

predict() {  # groups-name run-name head-json
  local groups=$1 name=$2 head=$3
  [ -f "$OUT/runs/$name/summary.json" ] && { echo "[study] reused $OUT/runs/$name"; return; }
  /usr/bin/time -f "[study] predict $name: %e s wall" $PY -m selfens_pl predict \
    --config configs/avg_paraphrased_webqa.yaml --data.path "$OUT/$groups.jsonl" --model.head "$head" \
    --output_dir "$OUT/runs/$name"
}

ORIGIN='{"class_path":"selfens_pl.heads.OriginHead"}'
PER_PROMPT='{"class_path":"selfens_pl.heads.PerPromptHead"}'
AVG='{"class_path":"selfens_pl.heads.LogitFusion","init_args":{"method":"avg"}}'
MAX='{"class_path":"selfens_pl.heads.LogitFusion","init_args":{"method":"max"}}'
PROB_AVG='{"class_path":"selfens_pl.heads.LogitFusion","init_args":{"method":"prob_avg"}}'
ENTROPY='{"class_path":"selfens_pl.heads.LogitFusion","init_args":{"method":"entropy_weighted"}}'
FLEX='{"class_path":"selfens_pl.heads.FlexFusion","init_args":{"layout":"shared_prefix","backend":"dense"}}'
VOTE='{"class_path":"selfens_pl.heads.VoteHead"}'

case "${1:-}" in
  dev)
    for t in 0.7 1.0 1.5 0.5; do  # 0.5 added once 0.7 turned out best of the first three
      paraphrase "dev_t$t" 200 100 "$t"
      predict "dev_t$t" "dev_t${t}_avg" "$AVG"
      predict "dev_t$t" "dev_t${t}_max" "$MAX"
    done
    predict dev_t1.0 dev_origin "$ORIGIN"  # paraphrase 0 is the original question in every file
    # the reference code's setting without the checks: the same first-attempt samples, unfiltered
    $PY scripts/paraphrase_unchecked.py "$OUT/dev_t1.5.jsonl" "$OUT/dev_t1.5_unchecked.jsonl"
    predict dev_t1.5_unchecked dev_t1.5_unchecked_avg "$AVG"
    ;;
  heldout)
    t=${2:?the chosen temperature}
    paraphrase heldout 0 200 "$t"
    predict heldout heldout_origin "$ORIGIN"
    predict heldout heldout_avg "$AVG"
    predict heldout heldout_prob_avg "$PROB_AVG"
    predict heldout heldout_entropy_weighted "$ENTROPY"
    predict heldout heldout_vote "$VOTE"
    predict heldout heldout_flex_shared_prefix "$FLEX"
    predict heldout heldout_max "$MAX"
    predict heldout heldout_per_prompt "$PER_PROMPT"
    $PY scripts/paraphrase_unchecked.py "$OUT/heldout.jsonl" "$OUT/heldout_unchecked.jsonl"
    predict heldout_unchecked heldout_unchecked_avg "$AVG"
    ;;
  *) echo "usage: $0 dev | heldout TEMPERATURE" >&2; exit 2 ;;
esac
