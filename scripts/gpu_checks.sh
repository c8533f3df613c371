#!/usr/bin/env bash
# One device session's checks (run from the repo root on a GPU machine that cannot reach a
# package registry): install the carried wheels (.device_wheels/, see WORKSPACE_NOTES.md),
# run the model/decoding tests on the GPU under the image's JAX, then the throughput and
# decoding benchmarks. Everything is written to $OUT as it finishes.
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --find-links .device_wheels \
  flax optax chex toolz msgpack treescope rich markdown-it-py mdurl pygments hypothesis \
  sortedcontainers attrs etils absl-py > "$OUT/pip.txt" 2>&1
export PYTHONPATH=$PWD
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
  python3 -c "import sys, jax, flax, optax; print(sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, jax.devices())"; } > "$OUT/env.txt" 2>&1
timeout 200 python3 -m pytest -q -p no:cacheprovider -p no:warnings tests/model tests/decoding \
  > "$OUT/tests_gpu.txt" 2>&1
for m in small base; do
  timeout 120 python3 scripts/bench_train.py --model $m --dtype bfloat16 --batch 64 --seq-len 512 \
    >> "$OUT/bench_train.jsonl" 2>> "$OUT/bench_train.err"
done
timeout 60 python3 scripts/bench_train.py --model small --dtype float32 --batch 64 --seq-len 512 \
  >> "$OUT/bench_train.jsonl" 2>> "$OUT/bench_train.err"
python3 scripts/bench_decode.py --model small --catalogs 12000 120000 1200000 --batches 1 64 \
  --reference-batches 1 64 > "$OUT/bench_decode.json" 2> "$OUT/bench_decode.err"
echo done >> "$OUT/env.txt"
