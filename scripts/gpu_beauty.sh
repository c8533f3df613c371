#!/usr/bin/env bash
# Amazon Beauty on one GPU in a single short device slot: the main semantic-id run
# (= ablate_none), the three RecSysLLM ablations and the index comparison (title, item_token,
# semantic_id from MiniLM vectors; ROWS="..." picks others, e.g. glm_beauty_item_token_encoder
# or the _cloze rows of scripts/reproduce.sh),
# trained side by side on the one card for TRAIN_MIN minutes
# each (Python batch building spread over data.workers processes per run), then evaluated with
# the rows' own `scripts/reproduce.sh` commands. Results: $OUT/results.tar.gz (+ logs).
#
#   OUT=/tmp/gpu_out TRAIN_MIN=4 bash scripts/gpu_beauty.sh
#
# Needs data_prepared/amazon_beauty, .device_data/beauty_minilm.npy (scripts/embed_items.py)
# and, on a machine with no registry, the wheels in .device_wheels/ (see WORKSPACE_NOTES.md).
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
TRAIN_MIN=${TRAIN_MIN:-4}; DEADLINE=$(( $(date +%s) + ${BUDGET_S:-520} ))
ROWS=${ROWS:-"glm_beauty_semantic ablate_entity_aware ablate_span_order ablate_entity_positions glm_beauty_title glm_beauty_item_token glm_beauty_semantic_encoder"}
if [ -d .device_wheels ]; then
  python3 -m pip install -q --no-index --no-deps --find-links .device_wheels \
    flax optax chex toolz msgpack treescope rich markdown-it-py mdurl pygments attrs etils \
    absl-py orbax-checkpoint grain array-record portpicker tensorflow-datasets dm-tree \
    immutabledict promise simple-parsing tensorflow-metadata termcolor toml docstring-parser \
    googleapis-common-protos rouge-score nltk > "$OUT/pip.txt" 2>&1
fi
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
# Several runs share the card: each takes a slice of its memory instead of 75 %.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${MEM_FRACTION:-0.12}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; nproc
  python3 -c "import sys, jax, flax, grain, orbax.checkpoint as o; print(sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, 'grain', grain.__version__, jax.devices())"; } > "$OUT/env.txt" 2>&1
python3 -c "from recsys_jax.data.prepared import load_prepared as l; l('data_prepared', 'amazon_beauty').test_cases()" \
  || { echo "cannot read the prepared data here; see $OUT/pip.txt"; exit 1; }
GPU=(${GPU_OVERRIDES:-train.batch_size=128 train.steps=1600 train.learning_rate=1e-3 train.warmup_steps=100
     train.eval_every=400 train.checkpoint_every=100000 train.log_every=50 data.workers=2
     train.plot=false} "train.time_limit_minutes=$TRAIN_MIN")
ENC_OPTS='data.index_options={method: hierarchical, codebook_size: 32, embedding: file, embeddings_path: .device_data/beauty_minilm.npy}'
export EVAL_ARGS="--batch-size ${EVAL_BATCH:-128}"
for row in $ROWS; do
  extra=("${GPU[@]}")
  case $row in
    glm_beauty_semantic_encoder*) extra+=("$ENC_OPTS") ;;
    glm_beauty_item_token_encoder*) extra+=(data.item_features=.device_data/beauty_minilm.npy) ;;
  esac
  RUN_NAME=gpu_$row timeout $(( DEADLINE - $(date +%s) )) \
    bash scripts/reproduce.sh "$row" "${extra[@]}" > "$OUT/$row.log" 2>&1 &
done
# Everything comes back in one archive, refreshed while the runs go (the slot may end first).
pack() { tar czf "$OUT/results.tmp.tgz" runs/gpu_*/eval_test/metrics.json \
  runs/gpu_*/eval_test/predictions_sequential_*.jsonl runs/gpu_*/metrics.jsonl \
  runs/gpu_*/summary.json runs/gpu_*.train.log 2>/dev/null; mv "$OUT/results.tmp.tgz" "$OUT/results.tar.gz"; }
while [ -n "$(jobs -r)" ]; do sleep 20; pack; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader >> "$OUT/gpu_util.txt" 2>&1; done
pack; echo "done $(date)" >> "$OUT/env.txt"
