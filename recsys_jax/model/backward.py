"""What the backward pass keeps and where XLA may fuse it: the per-block pieces of GLM's
training graph that trade memory or fusion for speed (docs/results.md, training speed)."""

from __future__ import annotations

import jax
from flax import nnx


@jax.custom_vjp
def materialized_cotangent(x):
    """Identity whose cotangent is computed once and stored: a fusion boundary for the
    backward pass, placed at every block input and at the output of each sublayer.

    The gradient of the residual stream is a chain of cheap elementwise adds (plus LayerNorm's
    backward) through all layers. XLA's CPU fusion duplicates cheap producers into each of
    their consumers, so every layer's weight-gradient copy re-derived the whole chain from the
    layers above it: backward time grew with depth squared (5x the forward pass for 14 layers).
    `lax.optimization_barrier` does not stop this (the CPU compiler removes barriers before
    fusing); a conditional does. Its predicate is data-dependent so it is not folded away, and
    both branches return the cotangent unchanged. Other platforms fuse by a cost model and get
    the plain identity.

    At a sublayer's output (attention, MLP) the stored cotangent is what its output projection's
    weight gradient reads, transposed. Without the boundary XLA:CPU fuses the dropout masks'
    hash and the residual stream's LayerNorm gradient into that transposing copy, which then
    runs several times slower than the plain copy (`small`: ~10 % of the backward pass)."""
    return x


def _identity_fwd(x):
    return x, None


def _store_cotangent(_, g):
    def stored(g):
        first = g.reshape(-1)[0]
        return jax.lax.cond(first == first, lambda g: g, lambda g: g * 1.0, g)

    return (jax.lax.platform_dependent(g, cpu=stored, default=lambda g: g),)


materialized_cotangent.defvjp(_identity_fwd, _store_cotangent)


def checkpointed_block(layer, x, mask, rngs, deterministic):
    """`layer`'s output with only its inputs kept for the backward pass (`cfg.remat`).

    Activation memory becomes layers x tokens x hidden plus one block's worth, recomputed in
    the backward pass (what lets GLM-10B train on 1024-token rows; scripts/memory_estimate.py).
    Functional split/merge around `jax.checkpoint`, so it also works when the model itself was
    merged inside a traced train step. Dropout draws one key per block from `rngs`, so its
    masks differ from the non-remat path's (same distribution).
    """
    graphdef, state = nnx.split(layer)
    key = rngs.dropout() if rngs is not None and not deterministic else None

    def run(state, x, mask, key):
        block = nnx.merge(graphdef, state)
        return block(
            x,
            mask,
            deterministic=deterministic,
            rngs=None if key is None else nnx.Rngs(dropout=key),
        )[0]

    return jax.checkpoint(run)(state, x, mask, key)
