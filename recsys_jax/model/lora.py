"""LoRA adapters (Hu et al. 2021) for the GLM's four linear maps, and merging them for export.

An adapted layer computes  y = x W + b + (alpha / rank) * dropout(x) A B  with W frozen.
B starts at zero, so an adapted model starts equal to its base model.

Adapter weights are `LoRAParam`, a subclass of `nnx.Param`, so the filter `LoRAParam` selects
adapters only:  `nnx.Optimizer(model, tx, wrt=LoRAParam)` and
`nnx.grad(loss, argnums=nnx.DiffState(0, LoRAParam))` train adapters and leave every base
weight untouched. (Because it subclasses Param, the filter `nnx.Param` still means "all".)
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
from flax import nnx

from recsys_jax.model.dropout import Dropout


class LoRAParam(nnx.Param):
    """A trainable low-rank adapter weight (the base weights are plain `nnx.Param`)."""


# Every parameter that is not an adapter: what a LoRA run loads from, and keeps frozen.
BASE_PARAMS = nnx.All(nnx.Param, nnx.Not(LoRAParam))


def partitioned(param_type, init, key, shape, names):
    """A parameter carrying logical axis names (`out_sharding` metadata, one name per dim).

    `eager_sharding=False`: parameters are created unplaced and `recsys_jax.sharding` places
    them with its one rules table; flax's eager sharding would need a mesh and the rules in a
    global context whenever a model is built (tests, CPU runs).
    """
    assert len(names) == len(shape), (names, shape)
    init = nnx.with_partitioning(init, tuple(names), eager_sharding=False)
    return param_type(init(key, tuple(shape), jnp.float32))


class LoRA(nnx.Module):
    """The low-rank update of one linear map with kernel shape `in_shape + out_shape`.

    `a`: in_shape + (rank,), `b`: (rank,) + out_shape. Logical names follow the base kernel,
    with an unsharded rank axis, so an adapter shards like the weight it adapts.
    """

    def __init__(
        self,
        in_shape,
        out_shape,
        in_names,
        out_names,
        *,
        rank: int,
        alpha: float,
        dropout: float,
        dtype,
        rngs: nnx.Rngs,
    ):
        self.rank = rank
        self.scale = alpha / rank
        self.dtype = dtype
        fan_in = math.prod(in_shape)
        self.a = partitioned(
            LoRAParam,
            nnx.initializers.normal(1.0 / math.sqrt(fan_in)),
            rngs.params(),
            (*in_shape, rank),
            (*in_names, "lora_rank"),
        )
        self.b = partitioned(
            LoRAParam,
            nnx.initializers.zeros,
            rngs.params(),
            (rank, *out_shape),
            ("lora_rank", *out_names),
        )
        self.dropout = Dropout(dropout)

    def delta(self) -> jnp.ndarray:
        """The dense update (alpha / rank) * A B, shaped like the base kernel (float32)."""
        return self.scale * jnp.tensordot(self.a[...], self.b[...], axes=1)

    def __call__(self, x, *, deterministic: bool = True, rngs: nnx.Rngs | None = None):
        n_in = self.a.ndim - 1
        x = self.dropout(x, deterministic=deterministic, rngs=rngs)
        # Two thin matmuls, never the dense update: cost O(rank) per token.
        h = jnp.tensordot(x, self.a[...].astype(self.dtype), axes=n_in)
        return self.scale * jnp.tensordot(h, self.b[...].astype(self.dtype), axes=1)


def merge_lora(model: nnx.Module) -> nnx.Module:
    """A copy of `model` with every adapter folded into its base kernel and removed.

    The copy's forward pass equals the adapted model's (up to float rounding), its state has
    exactly the base model's structure (the GLM names a checkpoint export expects), and its
    config (if it has one) says `lora_rank=0`, so `GLM(merged.cfg)` rebuilds the same tree.
    `model` itself is left unchanged.
    """
    merged = nnx.clone(model)
    adapted = [m for _, m in nnx.iter_modules(merged) if isinstance(getattr(m, "lora", None), LoRA)]
    for module in adapted:  # collected first: the loop edits the graph it walks
        module.kernel[...] = module.kernel[...] + module.lora.delta()
        module.lora = None
    if dataclasses.is_dataclass(getattr(merged, "cfg", None)):
        merged.cfg = dataclasses.replace(merged.cfg, lora_rank=0)
    return merged
