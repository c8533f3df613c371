"""Training-step speed of a config or model preset: where the time goes and how close it runs to
the machine's peak.

    python scripts/bench_train.py --config configs/beauty.yaml [key=value ...]
    python scripts/bench_train.py --model small --batch 16 --seq-len 136 --dtype float32

`--config` builds the trainer for that config (its dataset, vocabulary, model, optimizer and
compiled step) in a temporary run folder and times real batches from its input pipeline.
`--model` times a preset on synthetic batches laid out like packed GLM examples (Part A then
Part B, the last quarter of each row carrying loss). `--batch` / `--seq-len` override either.

Timed in turn for `--steps` rounds (medians; each timed call right after an untimed one of
the same function, so drift over the run moves all three alike):
  forward   — the loss (dropout on, as in training);
  optimizer — the update from given gradients (Adam, clipping, the gradient norm), the state
              donated as in training;
  backward  — the whole compiled train step minus those two. (Timing loss + gradients as a
              function of their own would also time writing 4 bytes per parameter to fresh
              memory, which the train step never does: its gradients feed the update.)
  input     — `next()` on the trainer's batch iterator, back to back (`--config` only; in
              training it overlaps the step, so it costs time only when it is the slower).
FLOPs per step come from XLA's cost analysis of the compiled train step, lowered with the loss
over exactly the batch's scored positions in one chunk and no gradient accumulation (the cost
analysis counts a loop body once, and cannot know how many loss chunks a batch leaves empty):
the work the step does, not the logits it skips.
The peak is measured here on the CPU (the best of several float32 GEMMs, printed) or looked up
for GPUs/TPUs (dense bf16), so `peak_fraction` is FLOP utilisation against what this machine
can do; on an accelerator it is the MFU. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from recsys_jax import sharding
from recsys_jax.config import TrainConfig, load_config
from recsys_jax.huge_pages import restart_with_huge_pages
from recsys_jax.model import GLM, MODEL_PRESETS
from recsys_jax.training import loss as loss_lib
from recsys_jax.training.step import (
    apply_update,
    dropout_key,
    init_train_state,
    learning_rate_schedule,
    make_optimizer,
    make_train_step,
    model_loss,
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


def measured_cpu_peak(size: int = 2048, repeats: int = 7) -> float:
    """FLOP/s of the best of `repeats` float32 [size, size] x [size, size] products on the CPU."""
    a = jnp.ones((size, size), jnp.float32)
    matmul = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(matmul(a, a))
    best = min(_timed(lambda: matmul(a, a)) for _ in range(repeats))
    return 2 * size**3 / best


def device_peak() -> tuple[float | None, str]:
    """(peak FLOP/s of all local devices, how it was obtained)."""
    kind = jax.devices()[0].device_kind
    if jax.default_backend() == "cpu":
        return measured_cpu_peak(), "measured float32 GEMM, 2048^3"
    for name, tflops in PEAK_BF16_TFLOPS.items():
        if name.lower() in kind.lower():
            return tflops * 1e12 * jax.local_device_count(), f"dense bf16 peak of {name}"
    return None, f"unknown device kind {kind!r}"


def _timed(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def median_time(fn, steps: int) -> float:
    """Median seconds of `steps` calls of `fn` after one warm-up (compile) call."""
    jax.block_until_ready(fn())  # compile / warm up
    return float(np.median([_timed(fn) for _ in range(steps)]))


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


@dataclasses.dataclass
class Setup:
    """What the timings need: the compiled step and its inputs."""

    name: str
    graphdef: object
    state: dict
    frozen: object
    tx: object
    train_cfg: TrainConfig
    batch: dict
    next_batch: object  # () -> a fresh host batch, or None for synthetic batches
    mesh: object
    params: int


@contextlib.contextmanager
def _config_setup(args):
    from recsys_jax.training import batches as batches_lib
    from recsys_jax.training.trainer import Trainer

    overrides = list(args.overrides)
    if args.batch:
        overrides.append(f"train.batch_size={args.batch}")
    if args.seq_len:
        overrides.append(f"data.seq_len={args.seq_len}")
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = load_config(args.config, overrides + [f"train.run_dir={run_dir}"])
        trainer = Trainer(cfg, log=lambda m: print(m, file=sys.stderr))
        try:
            host = next(trainer.train_iter)
            yield Setup(
                name=args.config,
                graphdef=trainer.graphdef,
                state=trainer.state,
                frozen=trainer.frozen,
                tx=trainer.tx,
                train_cfg=cfg.train,
                batch=sharding.shard_batch(batches_lib.model_batch(host), trainer.mesh),
                next_batch=lambda: next(trainer.train_iter),
                mesh=trainer.mesh,
                params=sum(int(x.size) for x in jax.tree.leaves(trainer.state["params"])),
            )
        finally:
            trainer.train_iter.close()


@contextlib.contextmanager
def _preset_setup(args):
    batch, seq_len = args.batch or 64, args.seq_len or 512
    cfg = dataclasses.replace(
        MODEL_PRESETS[args.model],
        dtype=args.dtype,
        vocab_size=args.vocab,
        max_positions=max(seq_len, 512),
        max_block_positions=max(seq_len, 512),
    )
    mesh = sharding.make_mesh(-1, 1, 1)
    model = sharding.init_sharded(lambda: GLM(cfg, rngs=nnx.Rngs(0)), mesh)
    graphdef, params, frozen = split_model(model, False)
    train_cfg = TrainConfig(steps=1000, warmup_steps=10, logits_fraction=args.logits_fraction)
    tx = make_optimizer(train_cfg)
    shardings = sharding.state_shardings(
        jax.eval_shape(lambda p: init_train_state(p, tx, 0), params), mesh
    )
    state = jax.jit(lambda p: init_train_state(p, tx, 0), out_shardings=shardings)(params)
    host = synthetic_batch(batch, seq_len, args.vocab, np.random.default_rng(0))
    yield Setup(
        name=args.model,
        graphdef=graphdef,
        state=state,
        frozen=frozen,
        tx=tx,
        train_cfg=train_cfg,
        batch=sharding.shard_batch(host, mesh),
        next_batch=None,
        mesh=mesh,
        params=sum(int(x.size) for x in jax.tree.leaves(params)),
    )


def step_function(s: Setup, grad_accum: int | None = None):
    """The train step `(state, frozen, batch) -> (state, metrics)` the trainer compiles (with
    `grad_accum` micro-batches instead of the config's, if given)."""
    tc = s.train_cfg
    schedule = learning_rate_schedule(tc)
    accum = tc.grad_accum if grad_accum is None else grad_accum
    return make_train_step(s.graphdef, s.tx, accum, schedule, tc.logits_fraction)


def step_flops(s: Setup) -> float:
    """XLA's FLOP count of one train step on this batch: the loss over exactly its scored
    positions in one chunk, no accumulation loop."""
    scored = int(np.sum(np.asarray(s.batch["loss_mask"]) > 0))
    with loss_lib.exact_rows(scored):
        lowered = jax.jit(step_function(s, grad_accum=1)).lower(s.state, s.frozen, s.batch)
        analysis = lowered.compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis.get("flops", 0.0))


def loss_alone(s: Setup):
    """params -> the loss of the setup's batch, dropout on as in training: the forward pass."""
    key = dropout_key(s.state["rng"], s.state["step"])
    fraction = s.train_cfg.logits_fraction
    return lambda params: model_loss(s.graphdef, params, s.frozen, s.batch, key, fraction)[0]


def measure(s: Setup, steps: int) -> dict:
    loss = loss_alone(s)
    forward = jax.jit(loss)
    params = s.state["params"]

    def update(state, grads):
        params, opt_state = apply_update(s.tx, state["params"], state["opt_state"], grads)
        return dict(state, params=params, opt_state=opt_state), optax.tree.norm(grads)

    optimizer = jax.jit(update, donate_argnums=(0,))
    step = jax.jit(step_function(s), donate_argnums=(0,))
    held = {
        "opt": jax.tree.map(jnp.copy, s.state),
        "grads": jax.jit(jax.grad(loss))(params),
        "step": jax.tree.map(jnp.copy, s.state),
    }

    def optimizer_step():
        held["opt"], norm = optimizer(held["opt"], held["grads"])
        return norm

    def train_step():
        held["step"], held["metrics"] = step(held["step"], s.frozen, s.batch)
        return held["metrics"]

    start = time.perf_counter()
    jax.block_until_ready(train_step())
    compile_s = time.perf_counter() - start
    # The three are timed in turn, round after round, so that the machine's drift over the run
    # moves them alike and their ratios hold. Each timed call follows an untimed call of the
    # same function, so each is timed with its own data in cache, as when run back to back.
    timed = {"forward": lambda: forward(params), "optimizer": optimizer_step, "step": train_step}
    runs = {name: [] for name in timed}
    for _ in range(steps):
        for name, fn in timed.items():
            jax.block_until_ready(fn())
            runs[name].append(_timed(fn))
    forward_s, optimizer_s, step_s = (float(np.median(runs[n])) for n in timed)
    metrics = held.pop("metrics")
    held.clear()

    input_s = None
    if s.next_batch is not None:  # back-to-back, so prefetched batches do not hide the cost
        count = 4 * steps
        start = time.perf_counter()
        for _ in range(count):
            s.next_batch()
        input_s = (time.perf_counter() - start) / count
    return {
        "forward_s": forward_s,
        "backward_s": max(step_s - forward_s - optimizer_s, 0.0),
        "optimizer_s": optimizer_s,
        "input_s": input_s,
        "step_s": step_s,
        "compile_s": compile_s,
        "loss": float(metrics["loss"]),
    }


def build_parser(description: str) -> argparse.ArgumentParser:
    """The arguments that pick a setup (`setup_for`); shared with bench_matmul_bound.py."""
    parser = argparse.ArgumentParser(description=description)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", help="a training config (YAML): real data and model")
    source.add_argument("--model", choices=sorted(MODEL_PRESETS), help="a preset, synthetic data")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of --config")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--vocab", type=int, default=32000, help="--model vocabulary size")
    parser.add_argument("--batch", type=int, help="batch rows (default: config's, or 64)")
    parser.add_argument("--seq-len", type=int, help="row length (default: config's, or 512)")
    parser.add_argument("--steps", type=int, default=5, help="timed runs per measurement")
    parser.add_argument(
        "--logits-fraction",
        type=float,
        default=TrainConfig.logits_fraction,
        help="--model: train.logits_fraction (1 = logits at every position)",
    )
    return parser


def setup_for(args, parser: argparse.ArgumentParser):
    """The context manager that yields the `Setup` the parsed arguments describe."""
    if args.config is None and args.model is None:
        args.model = "small"
    if args.overrides and args.config is None:
        parser.error("key=value overrides need --config")
    return _config_setup(args) if args.config else _preset_setup(args)


def main():
    parser = build_parser(__doc__.split("\n\n")[0].replace("\n", " "))
    args = parser.parse_args()
    setup = setup_for(args, parser)
    with setup as s:
        times = measure(s, args.steps)
        flops = step_flops(s)
        rows, length = s.batch["tokens"].shape
        examples = int(np.sum(np.max(np.asarray(s.batch["segment_ids"]), axis=1)))
    peak, peak_source = device_peak()
    flops_per_s = flops / times["step_s"]
    print(
        json.dumps(
            {
                "setup": s.name,
                "device": jax.devices()[0].device_kind,
                "devices": jax.device_count(),
                "params": s.params,
                "batch": rows,
                "seq_len": length,
                "examples_per_batch": examples,
                "logits_fraction": s.train_cfg.logits_fraction,
                "tokens_per_s": round(rows * length / times["step_s"], 1),
                "examples_per_s": round(examples / times["step_s"], 1),
                "step_s": round(times["step_s"], 4),
                "forward_s": round(times["forward_s"], 4),
                "backward_s": round(times["backward_s"], 4),
                "optimizer_s": round(times["optimizer_s"], 4),
                "input_s": None if times["input_s"] is None else round(times["input_s"], 4),
                "backward_forward_ratio": round(times["backward_s"] / times["forward_s"], 2),
                "compile_s": round(times["compile_s"], 2),
                "flops_per_step": flops,
                "flops_per_s": round(flops_per_s),
                "peak_flops_per_s": None if peak is None else round(peak),
                "peak_source": peak_source,
                "peak_fraction": None if peak is None else round(flops_per_s / peak, 4),
                "loss": times["loss"],
                "jax": jax.__version__,
            }
        )
    )


if __name__ == "__main__":
    restart_with_huge_pages()  # as training runs: recsys_jax/huge_pages.py
    main()
