#!/usr/bin/env bash
# Train and evaluate configs on the accelerator JAX sees (GPU or TPU), side by side on the one
# device: each goes through scripts/reproduce.sh (prepare if missing -> train -> evaluate) into
# runs/gpu_<name>/, its output in runs/gpu_logs/<name>.log.
#
#   bash scripts/run_on_gpu.sh CONFIG... [key=value overrides for every run]
#   TRAIN_MIN=4 bash scripts/run_on_gpu.sh glm_beauty_title glm_beauty_semantic \
#       train.batch_size=128 train.steps=1600 train.warmup_steps=100 train.eval_every=400
#
# CONFIG: a row name (configs/experiments/NAME.yaml, configs/NAME.yaml) or a YAML path; runs
# that need different overrides belong in their own config file. The small models here leave an
# accelerator mostly idle while Python builds batches, so several runs share it (each with its
# share of device memory) and batches are built by worker processes (data.workers).
# Configs with MiniLM features (`encoder`) need the `encoders` extra on this machine, or pass
# precomputed vectors (data.item_features=FILE.npy from scripts/embed_items.py).
# Environment: JOBS (runs at once, default all), MEM_FRACTION (device memory per run, default
#   0.9 / JOBS), TRAIN_MIN (stop each training after this many minutes, with a checkpoint; a
#   rerun resumes), EVAL_ONLY / EVAL_LIMIT / EVAL_ARGS as in scripts/reproduce.sh (EVAL_ARGS
#   default: --batch-size 256), TESTS=1 (first run tests/model and tests/decoding on the device),
#   OUT (also pack metrics, predictions and logs into OUT/results.tar.gz, refreshed as runs go).
set -u
cd "$(dirname "$0")/.."
configs=(); overrides=()
for a in "$@"; do if [[ $a == *=* ]]; then overrides+=("$a"); else configs+=("$a"); fi; done
[ ${#configs[@]} -gt 0 ] || { sed -n '2,21p' "$0" | cut -c3-; exit 2; }
JOBS=${JOBS:-${#configs[@]}}
LOGS=runs/gpu_logs; mkdir -p "$LOGS"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export EVAL_ARGS=${EVAL_ARGS:---batch-size 256}
# XLA preallocates 75 % of the device per process: split it between the runs sharing the device.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${MEM_FRACTION:-$(awk "BEGIN {print 0.9 / $JOBS}")}
workers=$(( $(nproc) / JOBS )); [ "$workers" -ge 1 ] || workers=1

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null; nproc
  python -c "import sys, jax; print(sys.version.split()[0], 'jax', jax.__version__, jax.devices())"
} > "$LOGS/env.txt" 2>&1
cat "$LOGS/env.txt"
if [ "${TESTS:-0}" = 1 ]; then
  python -m pytest -q -p no:cacheprovider tests/model tests/decoding > "$LOGS/tests.txt" 2>&1
  tail -n 1 "$LOGS/tests.txt"
fi
pack() {
  [ -n "${OUT:-}" ] || return 0
  mkdir -p "$OUT"
  tar czf "$OUT/results.tmp.tgz" "$LOGS" runs/gpu_*.train.log runs/gpu_*/metrics.jsonl \
    runs/gpu_*/summary.json runs/gpu_*/eval_test/metrics.json \
    runs/gpu_*/eval_test/predictions_*.jsonl 2>/dev/null
  mv "$OUT/results.tmp.tgz" "$OUT/results.tar.gz"
}

for config in "${configs[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; pack; done
  name=$(basename "$config" .yaml)
  # Defaults first: an override given on the command line wins.
  RUN_NAME=gpu_$name bash scripts/reproduce.sh "$config" "data.workers=$workers" \
    train.plot=false ${TRAIN_MIN:+train.time_limit_minutes=$TRAIN_MIN} "${overrides[@]}" \
    > "$LOGS/$name.log" 2>&1 &
done
while [ -n "$(jobs -rp)" ]; do
  sleep 20; pack
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader \
    >> "$LOGS/gpu_util.txt" 2>/dev/null
done
pack
for config in "${configs[@]}"; do
  name=$(basename "$config" .yaml)
  if [ -f "runs/gpu_$name/eval_test/metrics.json" ]; then echo "$name: runs/gpu_$name/eval_test/metrics.json"
  else echo "$name: no evaluation, see $LOGS/$name.log"; fi
done
