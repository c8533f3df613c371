"""Training-step throughput and MFU of a model preset on synthetic GLM batches.

    python scripts/bench_train.py [--model small] [--dtype bfloat16] [--batch 64] [--seq-len 512]

The compiled step is the one `recsys_jax.train` uses (AdamW, clipping, donated state), on a
mesh over all local devices (data parallel). Batches are random tokens laid out like packed
GLM examples (Part A then Part B, 25% of positions carry loss), so the data pipeline is not
measured. Prints one JSON object: tokens/s (median of timed steps), model FLOPs per token
(6 x matmul parameters + 12 x layers x seq_len x width for attention, plus 6 x vocab x width
for the tied output projection at the positions it runs on: ceil(fraction x batch x seq_len)
when the 25 % loss positions fit under `--logits-fraction`, else every position) and MFU
against the device's dense bf16 peak where known.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

import jax
import numpy as np
from flax import nnx

from recsys_jax import sharding
from recsys_jax.config import TrainConfig
from recsys_jax.model import GLM, MODEL_PRESETS
from recsys_jax.training.step import (
    init_train_state,
    learning_rate_schedule,
    make_optimizer,
    make_train_step,
    split_model,
)

PEAK_BF16_TFLOPS = {
    "H100": 989.0,
    "H200": 989.0,
    "A100": 312.0,
    "TPU v4": 275.0,
    "TPU v5 lite": 197.0,
    "TPU v5": 459.0,
}


def peak_tflops(kind: str):
    for name, peak in PEAK_BF16_TFLOPS.items():
        if name.lower() in kind.lower():
            return peak
    return None


def synthetic_batch(batch, seq_len, vocab, rng):
    split = int(seq_len * 0.75)
    return {
        "tokens": rng.integers(0, vocab, (batch, seq_len)).astype(np.int32),
        "positions": np.tile(np.minimum(np.arange(seq_len), split), (batch, 1)).astype(np.int32),
        "block_positions": np.tile(
            np.maximum(np.arange(seq_len) - split + 1, 0), (batch, 1)
        ).astype(np.int32),
        "segment_ids": np.ones((batch, seq_len), np.int32),
        "part_a": np.tile(np.arange(seq_len) < split, (batch, 1)).astype(np.int32),
        "targets": rng.integers(0, vocab, (batch, seq_len)).astype(np.int32),
        "loss_mask": np.tile(np.arange(seq_len) >= split, (batch, 1)).astype(np.float32),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="small", choices=sorted(MODEL_PRESETS))
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--logits-fraction",
        type=float,
        default=TrainConfig.logits_fraction,
        help="train.logits_fraction (1 = logits at every position)",
    )
    args = parser.parse_args()
    cfg = dataclasses.replace(
        MODEL_PRESETS[args.model],
        dtype=args.dtype,
        vocab_size=args.vocab,
        max_positions=max(args.seq_len, 512),
        max_block_positions=max(args.seq_len, 512),
    )
    mesh = sharding.make_mesh(-1, 1, 1)
    model = sharding.init_sharded(lambda: GLM(cfg, rngs=nnx.Rngs(0)), mesh)
    graphdef, params, frozen = split_model(model, False)
    tcfg = TrainConfig(steps=1000, warmup_steps=10)
    tx = make_optimizer(tcfg)
    state_sh = sharding.state_shardings(
        jax.eval_shape(lambda p: init_train_state(p, tx, 0), params), mesh
    )
    frozen_sh = sharding.state_shardings(frozen, mesh)
    state = jax.jit(lambda p: init_train_state(p, tx, 0), out_shardings=state_sh)(params)
    step = jax.jit(
        make_train_step(graphdef, tx, 1, learning_rate_schedule(tcfg), args.logits_fraction),
        in_shardings=(state_sh, frozen_sh, sharding.batch_sharding(mesh)),
        out_shardings=(state_sh, None),
        donate_argnums=(0,),
    )
    batch = sharding.shard_batch(
        synthetic_batch(args.batch, args.seq_len, args.vocab, np.random.default_rng(0)), mesh
    )
    t0 = time.perf_counter()
    state, m = step(state, frozen, batch)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        state, m = step(state, frozen, batch)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    sec = float(np.median(times))
    tokens = args.batch * args.seq_len
    d, layers = cfg.hidden_size, cfg.num_layers
    matmul_params = layers * (4 * d * d + 2 * d * cfg.ffn_dim)
    # Logits run at `cap` gathered positions when the batch's targets fit, else everywhere.
    positions = args.batch * args.seq_len
    cap = math.ceil(args.logits_fraction * positions - 1e-9)
    targets = args.batch * (args.seq_len - int(args.seq_len * 0.75))
    logit_share = cap / positions if targets <= cap < positions else 1.0
    flops_per_token = (
        6 * matmul_params + 12 * layers * args.seq_len * d + 6 * d * cfg.vocab_size * logit_share
    )
    kind = jax.devices()[0].device_kind
    peak = peak_tflops(kind)
    achieved = flops_per_token * tokens / sec / 1e12
    print(
        json.dumps(
            {
                "device": kind,
                "devices": jax.device_count(),
                "model": args.model,
                "dtype": args.dtype,
                "params": int(sum(x.size for x in jax.tree.leaves(params))),
                "batch": args.batch,
                "seq_len": args.seq_len,
                "logits_fraction": args.logits_fraction,
                "compile_s": round(compile_s, 1),
                "step_ms": round(1000 * sec, 2),
                "tokens_per_s": round(tokens / sec),
                "model_tflops_per_s": round(achieved, 2),
                "mfu": None if peak is None else round(achieved / (peak * jax.device_count()), 4),
                "loss": float(m["loss"]),
                "jax": jax.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
