#!/usr/bin/env bash
# Reproduce one row of the results tables (README, docs/results.md): prepare -> train -> evaluate.
#
#   bash scripts/reproduce.sh                      # list the rows
#   bash scripts/reproduce.sh ROW [key=value training overrides...]
#
# A GLM row is a config: configs/experiments/ROW.yaml, configs/ROW.yaml or a path to a YAML
# file. Its dataset is prepared if missing (embedded, or from $SHARED/<dataset> in the config's
# format), the config is trained into runs/ROW, and the checkpoint is evaluated on the test
# split: sequential and direct (and rating when the config trains the rating family), seen and
# unseen prompts, full ranking with the history excluded and unfiltered.
# Baseline rows: pop_beauty pop_sports pop_ml100k sasrec_beauty sasrec_sports sasrec_ml100k
#   mf_ml100k (extra arguments go to the baseline, e.g. --epochs 20).
# Environment: SHARED (raw datasets by name, default ../shared/data), DATA (prepared datasets,
#   default data_prepared), RUN_NAME (run folder under runs/, default ROW), EVAL_LIMIT (evaluate
#   the first N test cases only), EVAL_ARGS (extra evaluate flags), EVAL_ONLY (evaluate flags
#   that replace the derived ones, e.g. "--families sequential --prompts seen").
# Rerunning a row resumes training from the run's last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/data}; DATA=${DATA:-data_prepared}

if [ $# -eq 0 ]; then
  names() { for f in "$@"; do basename "$f" .yaml; done | fmt -w 96 | sed 's/^/  /'; }
  echo "usage: bash scripts/reproduce.sh ROW [key=value overrides...]"
  echo "GLM rows (configs/experiments/):"; names configs/experiments/*.yaml
  echo "also any configs/ROW.yaml:"; names configs/*.yaml
  echo "baselines:"; names pop_beauty pop_sports pop_ml100k sasrec_beauty sasrec_sports sasrec_ml100k mf_ml100k
  exit 0
fi
ROW=$1; shift
case $ROW in *.yaml) CONFIG=$ROW; ROW=$(basename "$ROW" .yaml) ;;
  *) CONFIG=configs/experiments/$ROW.yaml; [ -f "$CONFIG" ] || CONFIG=configs/$ROW.yaml ;; esac
RUN=runs/${RUN_NAME:-$ROW}
mkdir -p runs

prepare() {  # prepare DATASET FORMAT  (skipped when already prepared)
  if [ -f "$DATA/$1/meta.json" ]; then return; fi
  if [ "$2" = embedded ]; then
    python -m recsys_jax.data.prepare --dataset "$1" --data-dir "$DATA"
  else
    python -m recsys_jax.data.prepare --name "$1" --format "$2" --path "$SHARED/$1" --data-dir "$DATA"
  fi
}
baseline() {  # baseline MODULE [flags]: the dataset comes from the row's suffix
  local dataset format
  case ${ROW#*_} in
    beauty) dataset=amazon_beauty format=embedded ;;
    sports) dataset=amazon_sports format=p5 ;;
    ml100k) dataset=movielens_100k format=movielens ;;
  esac
  prepare "$dataset" "$format"
  python -m "recsys_jax.baselines.$1" --data-dir "$DATA" --dataset "$dataset" --out "$RUN" "${@:2}"
}

case $ROW in
  pop_beauty|pop_sports|pop_ml100k) baseline popularity "$@"; exit ;;
  sasrec_beauty|sasrec_sports|sasrec_ml100k) baseline sasrec --epochs 30 "$@"; exit ;;
  mf_ml100k) baseline matrix_factorization "$@"; exit ;;
esac
[ -f "$CONFIG" ] || { echo "unknown row '$ROW' (bash $0 lists them)" >&2; exit 2; }

# What the row needs from its config: the dataset, its format, and whether ratings are trained.
read -r DATASET FORMAT RATING < <(python -c '
import sys
from recsys_jax.config import load_config
d = load_config(sys.argv[1], sys.argv[2:]).data
print(d.dataset, d.format, "rating" if d.family_weights.get("rating", 0) > 0 else "")
' "$CONFIG" "$@")
prepare "$DATASET" "$FORMAT"
python -m recsys_jax.train "$CONFIG" "data.data_dir=$DATA" "train.run_dir=$RUN" "$@" 2>&1 \
  | tee -a "$RUN.train.log"
EVAL=(--families sequential direct $RATING --prompts seen unseen --unfiltered)
[ -z "${EVAL_ONLY:-}" ] || read -r -a EVAL <<< "$EVAL_ONLY"
python -m recsys_jax.evaluate --checkpoint "$RUN" --data-dir "$DATA" \
  ${EVAL_LIMIT:+--limit "$EVAL_LIMIT"} ${EVAL_ARGS:-} "${EVAL[@]}"
