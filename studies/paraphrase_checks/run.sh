#!/usr/bin/env bash
# Regenerates this study's two reports (embedded SmolLM2-135M-Instruct, CPU):
#   checks_benchmark.md: what the paraphrase checks keep and reject on the labelled benchmark
#     (tests/fixtures/paraphrase_benchmark/), each check alone, the default set, its held-out half, the trade-off
#     of the two thresholds and the model's own yes/no judge (scripts/paraphrase_checks_eval.py --judge,
#     scripts/paraphrase_judge.py): 6-14 minutes on 2 CPU cores;
#   sampling_study.md: the sampling temperature chosen on WebQuestions train questions 200-299, then the checked
#     paraphrases of the first 200 train questions answered by every head (scripts/paraphrase_study.sh,
#     scripts/paraphrase_table.py): about 1 h 30 min.
#   bash studies/paraphrase_checks/run.sh                 # both
#   bash studies/paraphrase_checks/run.sh benchmark       # the first only
# The study's runs resume and are reused under $OUT (default outputs/paraphrase_study); reports go to $REPORTS
# (default: this folder).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
OUT=${OUT:-outputs/paraphrase_study}
HERE=studies/paraphrase_checks
REPORTS=${REPORTS:-$HERE}
WHAT=${1:-all}
mkdir -p "$REPORTS" "$OUT"

if [ "$WHAT" = all ] || [ "$WHAT" = benchmark ]; then
  {
    echo "# The paraphrase checks on the labelled benchmark"
    echo
    echo "\`python scripts/paraphrase_checks_eval.py --judge\`, then \`python scripts/paraphrase_judge.py\`" \
         "(\`bash studies/paraphrase_checks/run.sh benchmark\`). A non-paraphrase part's \"kept\" is what slips" \
         "through."
    echo
    $PY scripts/paraphrase_checks_eval.py --judge
    echo
    echo "## The model's judge on the demo set's paraphrases"
    echo
    $PY scripts/paraphrase_judge.py
  } > "$REPORTS/checks_benchmark.md.tmp"
  mv "$REPORTS/checks_benchmark.md.tmp" "$REPORTS/checks_benchmark.md"
fi
if [ "$WHAT" = all ] || [ "$WHAT" = sampling ]; then
  OUT=$OUT PYTHON=$PY bash scripts/paraphrase_study.sh dev
  OUT=$OUT PYTHON=$PY bash scripts/paraphrase_study.sh heldout 0.7
  {
    echo "# Sampling settings and what checked paraphrases are worth"
    echo
    echo "\`bash scripts/paraphrase_study.sh dev\`, \`bash scripts/paraphrase_study.sh heldout 0.7\`, then" \
         "\`python scripts/paraphrase_table.py --out $OUT\` (\`bash studies/paraphrase_checks/run.sh sampling\`)."
    echo
    $PY scripts/paraphrase_table.py --out "$OUT"
  } > "$REPORTS/sampling_study.md.tmp"
  mv "$REPORTS/sampling_study.md.tmp" "$REPORTS/sampling_study.md"
fi
echo "reports in $REPORTS"
