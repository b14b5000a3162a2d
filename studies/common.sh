# Sourced by every study's run.sh once it has set HERE (its folder): stop at the first error, work from the
# repository root, and the settings every study takes from the environment: PYTHON (default python), OUT (where runs
# go, default outputs) and REPORTS (where reports go, default the study's folder).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python}
OUT=${OUT:-outputs}
REPORTS=${REPORTS:-$HERE}
mkdir -p "$REPORTS" "$OUT"
