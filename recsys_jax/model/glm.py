"""The GLM transformer (Du et al., ACL 2022) in Flax NNX, with a functional KV cache.

Token embedding + two learned position tables (position, block position), pre-LayerNorm
blocks (fused-QKV attention, GeLU MLP), a final LayerNorm, and logits tied to the token
embedding. Submodule names are those of the public GLM checkpoints (docs/design.md, GLM).

Batch contract, all [B, L] int32: `tokens`, `positions`, `block_positions`, `segment_ids`
(0 = padding, 1.. = packed example number), `part_a` (1 for Part A tokens). Query i attends
key j iff segment_ids[i] == segment_ids[j] != 0 and (part_a[j] == 1 or j <= i): GLM's
prefix-LM mask, generalised to packed rows.

Precision: parameters are float32; matmuls and activations run in `cfg.dtype`; LayerNorm,
attention scores/softmax and logits are float32.

Layers run in a Python for-loop: the parameter paths stay `layers.<i>.attention...` like the
GLM checkpoints and the KV cache is a plain per-layer list. The cost is compile time linear
in depth (acceptable even for 48 layers); `nnx.scan` would be the change if that matters.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from recsys_jax.model.attention import Attention, attention_mask, visible, write_slots
from recsys_jax.model.backward import checkpointed_block, materialized_cotangent
from recsys_jax.model.config import ModelConfig
from recsys_jax.model.dropout import Dropout
from recsys_jax.model.layers import MLP, Embed, LayerNorm


class Block(nnx.Module):
    """Pre-LayerNorm: x + drop(attn(ln(x))), then x + drop(mlp(ln(x)))."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.input_layernorm = LayerNorm(cfg.hidden_size)
        self.attention = Attention(cfg, rngs=rngs)
        self.post_attention_layernorm = LayerNorm(cfg.hidden_size)
        self.mlp = MLP(cfg, rngs=rngs)
        self.dropout = Dropout(cfg.dropout_rate)

    def __call__(
        self, x, mask, *, cache=None, index=None, prefix=None, deterministic=True, rngs=None
    ):
        kw = dict(deterministic=deterministic, rngs=rngs)
        h, cache = self.attention(
            self.input_layernorm(x), mask, cache=cache, index=index, prefix=prefix, **kw
        )
        # Training only: a stored gradient at each sublayer output (`materialized_cotangent`).
        boundary = (lambda h: h) if cache is not None else materialized_cotangent
        x = x + self.dropout(boundary(h), **kw)
        x = x + self.dropout(boundary(self.mlp(self.post_attention_layernorm(x), **kw)), **kw)
        return x, cache


class GLM(nnx.Module):
    """GLM language model: `model(tokens, positions, block_positions, segment_ids, part_a)`.

    Dropout is active only with `deterministic=False` and then draws from `rngs` (an
    `nnx.Rngs` with a "dropout" stream, passed per call), so the model's state is its
    parameters alone.

    KV cache (incremental decoding), a pytree whose every leaf has batch as dim 0, so beam
    search can carry it through `lax.while_loop` and reorder beams with `x[beam_idx]`:
      {"layers": [{"key": [B, T, H, D], "value": [B, T, H, D]}] * num_layers,
       "segment_ids": [B, T] int32 (0 = empty slot), "part_a": [B, T] int32}
    1. `cache = model.init_cache(B, T)`.
    2. `logits, cache = model.prefill(tokens, positions, block_positions, segment_ids,
       part_a, cache)`: the prompt ([B, Lp], Lp <= T, any left/right padding) fills slots
       [0, Lp); logits [B, Lp, V] equal `model(...)` on the prompt. Slots >= Lp are cleared.
    3. `logits, cache = model.decode_step(token, position, block_position, cache, index)`:
       inputs [B, 1]; `index` (int32 scalar, Lp <= index < T, the same for all rows) is the
       slot the new token takes — 1 more per step. The token joins the row's last example
       (its largest segment id) as a Part B token and attends every non-empty slot of that
       example with slot <= index: all of its prompt (Part A is bidirectional) and the tokens
       generated so far (causal). Logits [B, 1, V] equal the full forward pass over
       [prompt; generated tokens] with padding removed. Decoding is always deterministic.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg.validate()
        e = cfg.hidden_size
        self.word_embeddings = Embed(
            cfg.vocab_size, e, "vocab", rngs=rngs, feature_dim=cfg.item_feature_dim
        )
        self.position_embeddings = Embed(cfg.max_positions, e, "positions", rngs=rngs)
        self.block_position_embeddings = Embed(cfg.max_block_positions, e, "positions", rngs=rngs)
        self.embedding_dropout = Dropout(cfg.dropout_rate)
        self.layers = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.final_layernorm = LayerNorm(e)

    def __call__(
        self,
        tokens,
        positions,
        block_positions,
        segment_ids,
        part_a,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """All inputs [B, L] int32 -> logits [B, L, vocab_size] float32."""
        return self.word_embeddings.attend(
            self.hidden_states(
                tokens,
                positions,
                block_positions,
                segment_ids,
                part_a,
                deterministic=deterministic,
                rngs=rngs,
            )
        )

    def hidden_states(
        self,
        tokens,
        positions,
        block_positions,
        segment_ids,
        part_a,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """[B, L, hidden]: the final LayerNorm's output, i.e. the input of the tied output layer
        (`tied_logits(h, model.word_embeddings.table())`); the training loss takes logits only
        at the positions it scores."""
        mask = attention_mask(segment_ids, part_a)
        hidden, _ = self._forward(
            tokens, positions, block_positions, mask, None, None, deterministic, rngs, logits=False
        )
        return hidden

    def init_cache(self, batch: int, max_len: int, dtype=None) -> dict:
        """An empty cache: `batch` rows x `max_len` slots, k/v in `dtype` (default cfg.dtype)."""
        dtype = dtype or self.cfg.compute_dtype
        kv_shape = (batch, max_len, self.cfg.num_heads, self.cfg.head_dim)
        return {
            "layers": [
                {"key": jnp.zeros(kv_shape, dtype), "value": jnp.zeros(kv_shape, dtype)}
                for _ in range(self.cfg.num_layers)
            ],
            "segment_ids": jnp.zeros((batch, max_len), jnp.int32),
            "part_a": jnp.zeros((batch, max_len), jnp.int32),
        }

    def prefill(self, tokens, positions, block_positions, segment_ids, part_a, cache):
        """Run the prompt [B, Lp] and store its keys/values: -> (logits [B, Lp, V], cache)."""
        length, slots = tokens.shape[1], jnp.arange(cache["segment_ids"].shape[1])
        if length > slots.shape[0]:
            raise ValueError(f"prompt length {length} exceeds the cache's {slots.shape[0]} slots")
        k_seg = jnp.zeros_like(cache["segment_ids"]).at[:, :length].set(segment_ids)
        k_part_a = jnp.zeros_like(cache["part_a"]).at[:, :length].set(part_a)
        mask = visible(segment_ids, slots[:length], k_seg, k_part_a, slots)
        logits, layers = self._forward(
            tokens, positions, block_positions, mask, cache["layers"], 0, True, None
        )
        return logits, {"layers": layers, "segment_ids": k_seg, "part_a": k_part_a}

    def decode_step(self, token, position, block_position, cache, index):
        """One new token per row at slot `index`: -> (logits [B, 1, V], cache)."""
        index = jnp.asarray(index, jnp.int32)
        row_seg = jnp.max(cache["segment_ids"], axis=1, keepdims=True)  # [B, 1]
        k_seg = write_slots(cache["segment_ids"], row_seg, index)
        k_part_a = write_slots(cache["part_a"], jnp.zeros_like(row_seg), index)
        slots = jnp.arange(k_seg.shape[1])
        mask = visible(row_seg, index[None], k_seg, k_part_a, slots)
        logits, layers = self._forward(
            token, position, block_position, mask, cache["layers"], index, True, None
        )
        return logits, {"layers": layers, "segment_ids": k_seg, "part_a": k_part_a}

    def decode_step_shared(self, token, position, block_position, prefix, cache, index):
        """`decode_step` for K continuations of each prompt row that share its keys/values.

        prefix: the cache `prefill` returned for P prompt rows (read, never written or copied);
        cache: `init_cache(P * K, S)` for the continuations' own tokens (rows p*K .. p*K+K-1
        continue prompt row p; its segment ids are unused: every slot is a Part B token of the
        row's last example), slot `index` (0-based, < S) written now. Inputs [P*K, 1] ->
        (logits [P*K, 1, V], cache), equal to `decode_step` on a cache holding the prompt and
        the continuation. A beam of K reads the prompt once per step, not K times, and
        reordering beams moves only the continuation's S slots.
        """
        index = jnp.asarray(index, jnp.int32)
        seg = prefix["segment_ids"]
        row_seg = jnp.max(seg, axis=1, keepdims=True)
        visible = (seg == row_seg) & (seg != 0)  # the prompt's last example, all Part A
        slots = jnp.arange(cache["segment_ids"].shape[1])
        mask = jnp.broadcast_to(slots <= index, (token.shape[0], 1, slots.shape[0]))
        prefixes = [((layer["key"], layer["value"]), visible) for layer in prefix["layers"]]
        logits, layers = self._forward(
            token, position, block_position, mask, cache["layers"], index, True, None, prefixes
        )
        return logits, dict(cache, layers=layers)

    def _forward(
        self,
        tokens,
        positions,
        block_positions,
        mask,
        caches,
        index,
        deterministic,
        rngs,
        prefixes=None,
        logits=True,
    ):
        kw = dict(deterministic=deterministic, rngs=rngs)
        x = (
            self.word_embeddings(tokens)
            + self.position_embeddings(positions)
            + self.block_position_embeddings(block_positions)
        )
        x = self.embedding_dropout(x.astype(self.cfg.compute_dtype), **kw)
        new_caches = []
        for i, layer in enumerate(self.layers):
            if caches is None:
                x = materialized_cotangent(x)
            if self.cfg.remat and caches is None:
                x, c = checkpointed_block(layer, x, mask, rngs, deterministic), None
            else:
                x, c = layer(
                    x,
                    mask,
                    cache=None if caches is None else caches[i],
                    index=index,
                    prefix=None if prefixes is None else prefixes[i],
                    **kw,
                )
            new_caches.append(c)
        x = self.final_layernorm(x)
        return (self.word_embeddings.attend(x) if logits else x), (
            None if caches is None else new_caches
        )


def param_count(cfg: ModelConfig) -> int:
    """Number of parameters (adapters included) of `GLM(cfg)`, without allocating them."""
    model = nnx.eval_shape(lambda: GLM(cfg, rngs=nnx.Rngs(0)))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def fold_item_features(model: GLM) -> GLM:
    """A copy of `model` whose word embedding stores `E + F @ W` (`data.item_features`) as
    plain rows, with the features and projection removed.

    Same logits, but decoding no longer recomputes the [vocab, dim] x [dim, hidden] product
    at every step; the copy's config says `item_feature_dim=0`, so `GLM(copy.cfg)` rebuilds its
    tree. A model without features is returned as is."""
    if not model.cfg.item_feature_dim:
        return model
    folded = nnx.clone(model)
    emb = folded.word_embeddings
    emb.embedding[...] = emb.table()
    del emb.features, emb.projection
    folded.cfg = dataclasses.replace(folded.cfg, item_feature_dim=0)
    return folded
