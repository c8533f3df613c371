#!/usr/bin/env bash
# Amazon Beauty on one GPU in a single short device slot: several `scripts/reproduce.sh` rows
# trained side by side on the one card for TRAIN_MIN minutes each (Python batch building spread
# over data.workers processes per run), then evaluated with the rows' own commands. Default rows:
# the index comparison of issue #7 at one budget (title, item_token, semantic_id from TF-IDF,
# semantic_id from MiniLM vectors) and the best configuration so far (item_token + cloze +
# MiniLM item features). ROWS="..." picks others (e.g. the ablate_* rows).
# Rows outside FULL_EVAL_ROWS are evaluated with EVAL_ONLY (default: sequential, seen prompt)
# so that the slot holds every evaluation.
# Everything comes back as two files (the device returns at most 8): $OUT/results.tar.gz
# (metrics, predictions, training logs, pip/GPU logs under runs/gpu_logs/) and $OUT/env.txt.
#
#   OUT=/tmp/gpu_out TRAIN_MIN=4 bash scripts/gpu_beauty.sh
#
# Needs data_prepared/amazon_beauty, .device_data/beauty_minilm.npy (scripts/embed_items.py)
# and, on a machine with no registry, the wheels in .device_wheels/ (see WORKSPACE_NOTES.md).
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
TRAIN_MIN=${TRAIN_MIN:-4}; DEADLINE=$(( $(date +%s) + ${BUDGET_S:-520} ))
ROWS=${ROWS:-"glm_beauty_title glm_beauty_item_token glm_beauty_semantic glm_beauty_semantic_encoder glm_beauty_item_token_encoder_cloze"}
FULL_EVAL_ROWS=${FULL_EVAL_ROWS:-"glm_beauty_item_token_encoder_cloze"}
LOGS=runs/gpu_logs; mkdir -p "$LOGS"
if [ -d .device_wheels ]; then
  # Only what the CUDA image lacks (flax, optax, orbax, chex, etils are there).
  python3 -m pip install -q --no-index --no-deps --find-links .device_wheels \
    grain array-record portpicker tensorflow-datasets dm-tree immutabledict promise \
    simple-parsing tensorflow-metadata termcolor toml docstring-parser \
    googleapis-common-protos rouge-score nltk defusedxml > "$LOGS/pip.txt" 2>&1
fi
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
# Several runs share the card: each takes a slice of its memory instead of 75 %.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${MEM_FRACTION:-0.16}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; nproc
  python3 -c "import sys, jax, flax, grain, orbax.checkpoint as o; print(sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, 'grain', grain.__version__, jax.devices())"; } > "$OUT/env.txt" 2>&1
python3 -c "from recsys_jax.data.prepared import load_prepared as l; l('data_prepared', 'amazon_beauty').test_cases()" \
  || { echo "cannot read the prepared data here"; cat "$LOGS/pip.txt"; exit 1; }
GPU=(${GPU_OVERRIDES:-train.batch_size=128 train.steps=1600 train.learning_rate=1e-3 train.warmup_steps=100
     train.eval_every=400 train.checkpoint_every=100000 train.log_every=50 data.workers=2
     train.plot=false} "train.time_limit_minutes=$TRAIN_MIN")
ENC_OPTS='data.index_options={method: hierarchical, codebook_size: 32, embedding: file, embeddings_path: .device_data/beauty_minilm.npy}'
export EVAL_ARGS="--batch-size ${EVAL_BATCH:-256}"
SHORT_EVAL=${EVAL_ONLY:-"--families sequential --prompts seen"}
for row in $ROWS; do
  extra=("${GPU[@]}")
  case $row in
    glm_beauty_semantic_encoder*) extra+=("$ENC_OPTS") ;;
    glm_beauty_item_token_encoder*) extra+=(data.item_features=.device_data/beauty_minilm.npy) ;;
  esac
  case " $FULL_EVAL_ROWS " in *" $row "*) eval_only= ;; *) eval_only=$SHORT_EVAL ;; esac
  RUN_NAME=gpu_$row EVAL_ONLY=$eval_only timeout $(( DEADLINE - $(date +%s) )) \
    bash scripts/reproduce.sh "$row" "${extra[@]}" > "$LOGS/$row.log" 2>&1 &
done
# Everything comes back in one archive, refreshed while the runs go (the slot may end first).
pack() { tar czf "$OUT/results.tmp.tgz" runs/gpu_*/eval_test/metrics.json \
  runs/gpu_*/eval_test/predictions_*.jsonl runs/gpu_*/metrics.jsonl \
  runs/gpu_*/summary.json runs/gpu_*.train.log "$LOGS" 2>/dev/null; mv "$OUT/results.tmp.tgz" "$OUT/results.tar.gz"; }
while [ -n "$(jobs -r)" ]; do sleep 20; pack; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader >> "$LOGS/gpu_util.txt" 2>&1; done
pack; echo "done $(date)" >> "$OUT/env.txt"
