#!/usr/bin/env bash
# Reproduce one row of the results table end to end: prepare -> train -> evaluate.
#
#   bash scripts/reproduce.sh ROW [key=value training overrides...]
#
# Rows (see README "Results"): pop_beauty sasrec_beauty pop_sports sasrec_sports mf_ml100k
#   pop_ml100k sasrec_ml100k glm_beauty_semantic glm_beauty_title glm_beauty_item_token
#   glm_beauty_item_token_encoder glm_beauty_semantic_encoder glm_sports_semantic glm_sports_title glm_ml100k
#   glm_ml100k_semantic glm_ml100k_item_token
#   glm_ml100k_item_token_cloze glm_ml100k_semantic_cloze glm_beauty_item_token_cloze
#   glm_beauty_item_token_encoder_cloze
#   glm_beauty_semantic_encoder_cloze glm_sports_semantic_cloze
#   (_cloze: history items masked too, CLOZE below)
#   ablate_none ablate_entity_aware ablate_span_order ablate_entity_positions
#   (Beauty, semantic_id; ablate_none = all three RecSysLLM designs on)
# Environment: SHARED=../shared/data (the dataset folder), DATA=data_prepared,
#   EVAL_LIMIT (evaluate only the first N test cases; unset = the full protocol),
#   EVAL_ARGS (extra flags for recsys_jax.evaluate), EVAL_ONLY (flags that replace the row's
#   own evaluation flags, e.g. "--families sequential --prompts seen" in a short GPU slot),
#   RUN_NAME (run folder, default ROW).
# Every step writes into runs/<RUN_NAME>/; a finished step is not redone (delete the folder to redo).
set -euo pipefail
cd "$(dirname "$0")/.."
ROW=${1:?usage: bash scripts/reproduce.sh ROW [overrides...]}; shift
SHARED=${SHARED:-../shared/data}; DATA=${DATA:-data_prepared}; RUN=runs/${RUN_NAME:-$ROW}
LIMIT=${EVAL_LIMIT:+--limit $EVAL_LIMIT}

prepare() {  # prepare NAME FORMAT PATH  (skipped when already prepared)
  [ -d "$DATA/$1" ] || python -m recsys_jax.data.prepare --name "$1" --format "$2" \
    --path "$3" --data-dir "$DATA"
}
prepare_beauty() { [ -d "$DATA/amazon_beauty" ] || python -m recsys_jax.data.prepare --dataset amazon_beauty --data-dir "$DATA"; }
train() {  # train CONFIG [overrides]
  local config=$1; shift
  python -m recsys_jax.train "$config" "data.data_dir=$DATA" "train.run_dir=$RUN" "$@" "${EXTRA[@]}" \
    2>&1 | tee -a "$RUN.train.log"
}
evaluate() {
  [ -z "${EVAL_ONLY:-}" ] || set -- $EVAL_ONLY
  python -m recsys_jax.evaluate --checkpoint "$RUN" --data-dir "$DATA" $LIMIT ${EVAL_ARGS:-} "$@"
}
baseline() { python -m "recsys_jax.baselines.$1" --data-dir "$DATA" --dataset "$2" --out "$RUN" "${@:3}"; }

# Cloze rows: each history item of a task prompt is also masked with this probability, so a
# prompt teaches several next items, not one (picked on ML-100K validation, WORKSPACE_NOTES.md).
# More loss positions per batch: logits at up to half of them on the fast path.
CLOZE=(masking.extra_entity_mask_prob=0.9 train.logits_fraction=0.5)
# ML-100K GLM rows: configs/ml100k.yaml plus the row's overrides; ratings and next item.
ml100k() {
  prepare movielens_100k movielens "$SHARED/movielens_100k"
  train configs/ml100k.yaml "data.path=$SHARED/movielens_100k" "$@"
  evaluate --families rating sequential --prompts seen unseen
}
ML_SEMANTIC='data.index_options={method: hierarchical, codebook_size: 16}'
EXTRA=("$@")
mkdir -p runs
case $ROW in
  pop_beauty)    prepare_beauty; baseline popularity amazon_beauty ;;
  sasrec_beauty) prepare_beauty; baseline sasrec amazon_beauty --epochs 30 ;;
  pop_sports)    prepare amazon_sports p5 "$SHARED/amazon_sports"; baseline popularity amazon_sports ;;
  sasrec_sports) prepare amazon_sports p5 "$SHARED/amazon_sports"; baseline sasrec amazon_sports --epochs 30 ;;
  pop_ml100k)    prepare movielens_100k movielens "$SHARED/movielens_100k"; baseline popularity movielens_100k ;;
  sasrec_ml100k) prepare movielens_100k movielens "$SHARED/movielens_100k"; baseline sasrec movielens_100k --epochs 30 ;;
  mf_ml100k)     prepare movielens_100k movielens "$SHARED/movielens_100k"; baseline matrix_factorization movielens_100k ;;
  glm_beauty_semantic) prepare_beauty; train configs/beauty_semantic.yaml
                 evaluate --families sequential direct --prompts seen unseen --unfiltered ;;
  glm_beauty_title) prepare_beauty; train configs/beauty_semantic.yaml data.index=title 'data.index_options={}' data.seq_len=256 model.max_positions=512
                 evaluate --families sequential direct --prompts seen unseen --unfiltered ;;
  glm_beauty_item_token) prepare_beauty; train configs/beauty_semantic.yaml data.index=item_token 'data.index_options={}'
                 evaluate --families sequential --prompts seen ;;
  glm_beauty_item_token_encoder) prepare_beauty; train configs/beauty_semantic.yaml data.index=item_token 'data.index_options={}' data.item_features=encoder
                 evaluate --families sequential --prompts seen ;;
  glm_beauty_semantic_encoder) prepare_beauty; train configs/beauty_semantic_encoder.yaml
                 evaluate --families sequential --prompts seen ;;
  glm_sports_semantic) prepare amazon_sports p5 "$SHARED/amazon_sports"
                 train configs/beauty_semantic.yaml data.dataset=amazon_sports data.format=p5 "data.path=$SHARED/amazon_sports"
                 evaluate --families sequential direct --prompts seen unseen --unfiltered ;;
  glm_sports_title) prepare amazon_sports p5 "$SHARED/amazon_sports"
                 train configs/beauty_semantic.yaml data.dataset=amazon_sports data.format=p5 "data.path=$SHARED/amazon_sports" data.index=title 'data.index_options={}' data.seq_len=256 model.max_positions=512
                 evaluate --families sequential direct --prompts seen --direct-methods generate ;;
  glm_sports_semantic_cloze) prepare amazon_sports p5 "$SHARED/amazon_sports"
                 train configs/beauty_semantic.yaml data.dataset=amazon_sports data.format=p5 "data.path=$SHARED/amazon_sports" "${CLOZE[@]}"
                 evaluate --families sequential direct --prompts seen --direct-methods generate ;;
  glm_ml100k)    ml100k ;;
  glm_ml100k_semantic) ml100k data.index=semantic_id "$ML_SEMANTIC" ;;
  glm_ml100k_item_token) ml100k data.index=item_token ;;
  glm_ml100k_item_token_cloze) ml100k data.index=item_token "${CLOZE[@]}" ;;
  glm_ml100k_semantic_cloze) ml100k data.index=semantic_id "$ML_SEMANTIC" "${CLOZE[@]}" ;;
  glm_beauty_item_token_cloze) prepare_beauty; train configs/beauty_semantic.yaml data.index=item_token 'data.index_options={}' "${CLOZE[@]}"
                 evaluate --families sequential direct --prompts seen unseen --unfiltered ;;
  glm_beauty_item_token_encoder_cloze) prepare_beauty; train configs/beauty_semantic.yaml data.index=item_token 'data.index_options={}' data.item_features=encoder "${CLOZE[@]}"
                 evaluate --families sequential direct --prompts seen --direct-methods generate ;;
  glm_beauty_semantic_encoder_cloze) prepare_beauty; train configs/beauty_semantic_encoder.yaml "${CLOZE[@]}"
                 evaluate --families sequential direct --prompts seen unseen --unfiltered ;;
  ablate_none)             prepare_beauty; train configs/beauty_semantic.yaml
                 evaluate --families sequential --prompts seen ;;
  ablate_entity_aware)     prepare_beauty; train configs/beauty_semantic.yaml masking.entity_aware=false
                 evaluate --families sequential --prompts seen ;;
  ablate_span_order)       prepare_beauty; train configs/beauty_semantic.yaml masking.keep_span_order=false
                 evaluate --families sequential --prompts seen ;;
  ablate_entity_positions) prepare_beauty; train configs/beauty_semantic.yaml masking.entity_positions=false
                 evaluate --families sequential --prompts seen ;;
  *) echo "unknown row '$ROW' (see the header of $0)" >&2; exit 2 ;;
esac
