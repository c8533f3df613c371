"""Per-device memory of a training configuration on a mesh, without allocating anything.

Parameter, optimizer-state and gradient bytes are exact: the abstract train state comes from
`jax.eval_shape` over the same functions the trainer uses (`split_model`, `make_optimizer`,
`init_train_state`) and each tensor counts with its shard shape under our sharding rules.
Activations are a formula (the compiled program's buffers depend on XLA's scheduling); per
token and layer, in bytes, with c = bytes of the compute dtype, h = hidden, f = MLP width,
a = heads, s = sequence length, t = tensor-parallel ways:

    kept for the backward pass without remat:
        h (8c + 10)            LayerNorm inputs/outputs (float32 statistics), q/k/v, attention
                               context, the residual stream, dropout masks
      + 2 c f                  MLP hidden before and after GeLU
      + (5 + c) a s            attention probabilities (float32 + dropout mask + cast copy)
    (the head / MLP terms divided by t when heads and MLP are tensor-parallel)

    with `model.remat`: c h per layer (each block's input) + one block's full set above.

plus the float32 logits and their gradient, 8 V bytes per token (V split over tensor).
Tokens per device = micro-batch rows per data shard x seq_len. Against XLA:CPU's buffer
assignment for a float32 8 x 256 model on 4 x 512 tokens without remat, the formula is ~25 %
low per layer (110 vs 144 MiB), so keep at least that margin below a device's memory. (XLA:CPU
cannot check the remat figure: it shows no saving even for a toy `jax.checkpoint` chain.)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from recsys_jax import sharding
from recsys_jax.model import GLM
from recsys_jax.training.step import init_train_state, make_optimizer, split_model

GIB = 1024**3


def _per_device_bytes(tree, shardings) -> int:
    total = 0
    for leaf, sh in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)):
        total += math.prod(sh.shard_shape(leaf.shape)) * leaf.dtype.itemsize
    return total


def _total_bytes(tree) -> int:
    return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def _count(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def activation_bytes(model_cfg, rows: int, seq_len: int, tensor: int, remat: bool) -> int:
    """The activation formula of the module doc, for `rows` rows on one device."""
    c = jnp.dtype(model_cfg.compute_dtype).itemsize
    h, f, a, s = model_cfg.hidden_size, model_cfg.ffn_dim, model_cfg.num_heads, seq_len
    t = tensor
    replicated = h * (3 * c + 10)  # LayerNorms, residual stream, dropout masks
    split = (5 * c * h + 2 * c * f + (5 + c) * a * s) / t  # q/k/v/context, MLP, attention
    per_layer = (replicated + split) * rows * s
    kept = (
        (model_cfg.num_layers * c * h * rows * s + per_layer)
        if remat
        else model_cfg.num_layers * per_layer
    )
    logits = 8 * model_cfg.vocab_size / t * rows * s
    return int(kept + logits)


def estimate(cfg, mesh) -> dict:
    """Per-device bytes of `cfg` (a recsys_jax Config) trained on `mesh`."""
    model_cfg = cfg.model
    abstract = nnx.eval_shape(lambda: GLM(model_cfg, rngs=nnx.Rngs(0)))
    _, params, frozen = split_model(abstract, cfg.train.lora_only)
    tx = make_optimizer(cfg.train)
    state = jax.eval_shape(lambda p: init_train_state(p, tx, 0), params)
    state_sh = sharding.state_shardings(state, mesh)
    frozen_sh = sharding.state_shardings(frozen, mesh)

    data_ways = mesh.shape["data"] * mesh.shape["fsdp"]
    if cfg.train.batch_size % (data_ways * cfg.train.grad_accum):
        raise ValueError(
            f"train.batch_size={cfg.train.batch_size} does not split into "
            f"{cfg.train.grad_accum} micro-batches over {data_ways} data shards"
        )
    rows = cfg.train.batch_size // cfg.train.grad_accum // data_ways
    trainable = _per_device_bytes(state["params"], state_sh["params"])
    out = {
        "devices": int(mesh.devices.size),
        "mesh": {k: int(v) for k, v in mesh.shape.items()},
        "parameters": _count(params) + _count(frozen),
        "trainable_parameters": _count(params),
        "micro_batch_rows_per_device": rows,
        "seq_len": cfg.data.seq_len,
        "remat": bool(model_cfg.remat),
        "bytes_per_device": {
            "frozen_params": _per_device_bytes(frozen, frozen_sh),
            "trainable_params": trainable,
            "optimizer_state": _per_device_bytes(state["opt_state"], state_sh["opt_state"]),
            # The step's gradients plus the gradient-accumulation carry, both float32 like
            # the trainable parameters and sharded the same way.
            "gradients": 2 * trainable,
            "activations": activation_bytes(
                model_cfg, rows, cfg.data.seq_len, mesh.shape["tensor"], model_cfg.remat
            ),
        },
        "total_bytes_all_devices": {
            "params": _total_bytes(params) + _total_bytes(frozen),
            "optimizer_state": _total_bytes(state["opt_state"]),
        },
    }
    out["bytes_per_device"]["total"] = sum(out["bytes_per_device"].values())
    out["gib_per_device"] = {k: round(v / GIB, 3) for k, v in out["bytes_per_device"].items()}
    return out
