#!/usr/bin/env bash
# Regenerates this study's reports: the prompt as the reference code's Q:/A: text (--data.chat_template none) against
# the model's chat template (model), embedded SmolLM2-135M-Instruct, greedy, each run a preset of configs/ with the
# study's data: origin, the best cheap method (rerank_myriadlama.yaml with demonstration answers, similar blocks,
# the first paraphrase: K = 1, M = 3) and the one-prompt control the README recommends for fact probes (the 10
# similar demonstrations in one prompt) on the 800 shipped MyriadLAMA facts; origin and the rescoring preset
# (rerank_demos_webqa.yaml; the README's choice there, copying the nearest answer, asks no prompt) on WebQuestions
# train questions 1300-1599. The rescoring runs are made in two parts each
# (MyriadLAMA facts 0-199 and 200-799, WebQuestions 1300-1399 and 1400-1599: the first parts were the study's first
# pass); every answer is the same as in one run (batched = alone, tested), and the gains read both parts together.
#   bash studies/chat_template/run.sh            # 14 runs one after the other: about 3.5 h on a shared 2-core CPU
#   OUT=/tmp/study REPORTS=/tmp/study bash studies/chat_template/run.sh --data.limit 2   # a smaller check
# A finished run is not run again (delete its folder to redo it); extra arguments go to every predict. Reports go
# to $REPORTS (default: this folder): report_<data>.md (every run's accuracy) and gains_<data>.md (each method with
# the template against without it, paired bootstrap 95% intervals, 2,000 resamples, seed 0).
HERE=studies/chat_template
source "$(dirname "$0")/../common.sh"
R=$OUT/chat_template
mkdir -p "$R"
FACTS='[../shared/data/myriadlama/dev.jsonl, ../shared/data/myriadlama/dev600.jsonl]'
TRAIN=../shared/data/webquestions/train.jsonl

predict() {  # name preset [flags]: the run with the text prompt, then with the chat template
  local name=$1 preset=$2; shift 2
  for mode in none model; do
    if [ ! -f "$R/${name}_$mode/summary.json" ]; then
      $PY -m selfens_pl predict --config "configs/$preset.yaml" --data.chat_template "$mode" \
        --output_dir "$R/${name}_$mode" "$@"
    fi
  done
}

predict origin_myriadlama origin_myriadlama --data.path "$FACTS" "$@"
RERANK_FACTS=(--model.head.init_args.demo_answers true --data.num_paraphrases 1 --data.demo_selection similar
              --data.path "$FACTS")
predict rerank_demos_myriadlama rerank_myriadlama "${RERANK_FACTS[@]}" --data.limit 200 "$@"
predict rerank_demos_myriadlama_rest rerank_myriadlama "${RERANK_FACTS[@]}" --data.start 200 --data.limit 600 "$@"
# the recommended method for fact probes (README): one prompt with the 10 similar demonstrations (knn_prompt_all)
predict knn_prompt_all_myriadlama rerank_myriadlama --model.head selfens_pl.heads.SimilarPromptHead \
  --model.head.init_args.prompt all --data.num_paraphrases 1 --data.demo_selection similar --data.path "$FACTS" "$@"
predict origin_webqa origin_webqa --data.path "$TRAIN" --data.start 1300 --data.limit 300 "$@"
predict rerank_demos_webqa rerank_demos_webqa --data.path "$TRAIN" --data.start 1300 --data.limit 100 "$@"
predict rerank_demos_webqa_rest rerank_demos_webqa --data.path "$TRAIN" --data.start 1400 --data.limit 200 "$@"

for data in myriadlama webqa; do
  knn=()
  [ "$data" = webqa ] || knn=("$R"/knn_prompt_all_myriadlama_{none,model})
  $PY -m selfens_pl report "$R"/{origin,rerank_demos}_${data}_{none,model} \
    "$R"/rerank_demos_${data}_rest_{none,model} "${knn[@]}" --out "$REPORTS/report_$data.md"
  { $PY scripts/paired_gains.py "$R/origin_${data}_none" "$R/origin_${data}_model"
    echo
    $PY scripts/paired_gains.py "$R/rerank_demos_${data}_none+$R/rerank_demos_${data}_rest_none" \
      "$R/rerank_demos_${data}_model+$R/rerank_demos_${data}_rest_model"
    if [ "${#knn[@]}" -gt 0 ]; then echo; $PY scripts/paired_gains.py "${knn[@]}"; fi
  } > "$REPORTS/gains_$data.md"
done
echo "reports in $REPORTS"
