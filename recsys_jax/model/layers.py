"""The GLM's building blocks other than attention: LayerNorm, embedding tables (optionally
with frozen item features through a learned projection), the tied output layer, dense layers
with optional LoRA, and the MLP.

Parameters are float32; matmuls run in the config's compute dtype; LayerNorm statistics and
the tied logits are float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from recsys_jax.model.config import ModelConfig
from recsys_jax.model.lora import LoRA, partitioned

INIT_STD = 0.02


class LayerNorm(nnx.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        self.eps = eps
        self.scale = partitioned(nnx.Param, nnx.initializers.ones, None, (dim,), ("norm",))
        self.bias = partitioned(nnx.Param, nnx.initializers.zeros, None, (dim,), ("norm",))

    def __call__(self, x):
        # Statistics in float32 whatever the compute dtype: bf16 variance is too coarse.
        y = x.astype(jnp.float32)
        mean = y.mean(-1, keepdims=True)
        y = (y - mean) * jax.lax.rsqrt(jnp.square(y - mean).mean(-1, keepdims=True) + self.eps)
        return (y * self.scale[...] + self.bias[...]).astype(x.dtype)


class FrozenParam(nnx.Param):
    """Saved and restored like a parameter, never updated by the optimiser."""


class Embed(nnx.Module):
    """A table of rows; with `feature_dim` > 0 each row adds `features[row] @ projection`,
    frozen pretrained vectors (item text embeddings) mapped by a learned projection."""

    def __init__(self, num: int, dim: int, name: str, *, rngs: nnx.Rngs, feature_dim: int = 0):
        self.embedding = partitioned(
            nnx.Param,
            nnx.initializers.normal(INIT_STD),
            rngs.params(),
            (num, dim),
            (name, "embed"),
        )
        if feature_dim:
            self.features = partitioned(
                FrozenParam,
                nnx.initializers.zeros,
                rngs.params(),
                (num, feature_dim),
                (name, "item_features"),
            )
            self.projection = partitioned(
                nnx.Param,
                nnx.initializers.normal(INIT_STD),
                rngs.params(),
                (feature_dim, dim),
                ("item_features", "embed"),
            )

    def table(self):
        if not hasattr(self, "features"):
            return self.embedding[...]
        return self.embedding[...] + self.features[...] @ self.projection[...]

    def __call__(self, ids):
        # mode="clip": ids past the table reuse its last row; the batch builder owns range checks.
        return jnp.take(self.table(), ids, axis=0, mode="clip")

    def attend(self, x):
        """x @ E^T in x's dtype, accumulated and returned in float32 (the tied output layer)."""
        return tied_logits(x, self.table())


def tied_logits(x, table):
    """[..., d] x [vocab, d] -> [..., vocab] float32, multiplied in x's dtype."""
    return jnp.einsum("...d,vd->...v", x, table.astype(x.dtype), preferred_element_type=jnp.float32)


def contract(x, kernel, n_in: int):
    """x [..., *in] . kernel [*in, *out] -> [..., *out], contracting x's last n_in dims.

    On one device the product runs as a 2-D matmul of reshaped views: XLA:CPU's matmul library
    takes 2-D row-major operands as they are, while an N-D kernel (qkv: [embed, 3, heads,
    head_dim]) made the backward pass copy each kernel into a transposed layout twice and run
    its gradient products ~30 % slower (docs/results.md, training speed). With several devices
    the N-D form stays, so a kernel sharded over its heads is never merged with unsharded dims.
    """
    if jax.device_count() > 1:
        return jnp.tensordot(x, kernel, axes=n_in)
    in_shape, out_shape = kernel.shape[:n_in], kernel.shape[n_in:]
    lead = x.shape[: x.ndim - n_in]
    flat = x.reshape(-1, math.prod(in_shape)) @ kernel.reshape(math.prod(in_shape), -1)
    return flat.reshape(*lead, *out_shape)


class Dense(nnx.Module):
    """y = x . kernel + bias, contracting x's last len(in_shape) dims; optional LoRA.

    Kernels are N-D (e.g. qkv: [embed, 3, heads, head_dim]) so heads shard cleanly over the
    tensor axis; a GLM checkpoint's 2-D weight maps in by transpose + reshape.
    """

    def __init__(
        self,
        in_shape,
        out_shape,
        in_names,
        out_names,
        *,
        cfg: ModelConfig,
        name: str,
        init_std: float = INIT_STD,
        rngs: nnx.Rngs,
    ):
        self.dtype = cfg.compute_dtype
        self.kernel = partitioned(
            nnx.Param,
            nnx.initializers.normal(init_std),
            rngs.params(),
            (*in_shape, *out_shape),
            (*in_names, *out_names),
        )
        self.bias = partitioned(nnx.Param, nnx.initializers.zeros, None, out_shape, out_names)
        self.lora = nnx.data(None)  # data, not static: merge_lora may swap it for None
        if cfg.lora_rank and name in cfg.lora_targets:
            self.lora = LoRA(
                in_shape,
                out_shape,
                in_names,
                out_names,
                rank=cfg.lora_rank,
                alpha=cfg.lora_alpha,
                dropout=cfg.lora_dropout,
                dtype=self.dtype,
                rngs=rngs,
            )

    def __call__(self, x, *, deterministic: bool = True, rngs: nnx.Rngs | None = None):
        n_in = self.kernel.ndim - self.bias.ndim
        y = contract(x, self.kernel[...].astype(self.dtype), n_in)
        y = y + self.bias[...].astype(self.dtype)
        if self.lora is not None:
            y = y + self.lora(x, deterministic=deterministic, rngs=rngs)
        return y


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        out_std = INIT_STD / math.sqrt(2 * cfg.num_layers)
        self.dense_h_to_4h = Dense(
            (cfg.hidden_size,),
            (cfg.ffn_dim,),
            ("embed",),
            ("mlp",),
            cfg=cfg,
            name="dense_h_to_4h",
            rngs=rngs,
        )
        self.dense_4h_to_h = Dense(
            (cfg.ffn_dim,),
            (cfg.hidden_size,),
            ("mlp",),
            ("embed",),
            cfg=cfg,
            name="dense_4h_to_h",
            init_std=out_std,
            rngs=rngs,
        )

    @jax.named_scope("mlp")  # profiles group ops by it (scripts/profile_step.py)
    def __call__(self, x, *, deterministic=True, rngs=None):
        h = self.dense_h_to_4h(x, deterministic=deterministic, rngs=rngs)
        h = jax.nn.gelu(h, approximate=True)  # GLM/Megatron use the tanh GeLU
        return self.dense_4h_to_h(h, deterministic=deterministic, rngs=rngs)
