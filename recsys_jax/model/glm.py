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

from recsys_jax.model.backward import checkpointed_block, materialized_cotangent
from recsys_jax.model.config import ModelConfig
from recsys_jax.model.dropout import Dropout
from recsys_jax.model.lora import LoRA, partitioned

_NEG = float(jnp.finfo(jnp.float32).min)  # finite: a row with no visible key gives no NaN
_INIT_STD = 0.02


def _visible(q_seg, q_slot, k_seg, k_part_a, k_slot):
    """bool [B, Lq, Lk] from query segments/slots [B, Lq]/[Lq] and key ones [B, Lk]/[Lk]."""
    same = (q_seg[:, :, None] == k_seg[:, None, :]) & (k_seg[:, None, :] != 0)
    seen = (k_part_a[:, None, :] == 1) | (k_slot[None, None, :] <= q_slot[None, :, None])
    return same & seen


def attention_mask(segment_ids: jax.Array, part_a: jax.Array) -> jax.Array:
    """bool [B, L, L]: True where query i may attend key j (the rule in the module doc).

    Padding queries get an all-False row; attention turns it into harmless finite values.
    """
    slots = jnp.arange(segment_ids.shape[1])
    return _visible(segment_ids, slots, segment_ids, part_a, slots)


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
            nnx.initializers.normal(_INIT_STD),
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
                nnx.initializers.normal(_INIT_STD),
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
        init_std: float = _INIT_STD,
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
        y = jnp.tensordot(x, self.kernel[...].astype(self.dtype), axes=n_in)
        y = y + self.bias[...].astype(self.dtype)
        if self.lora is not None:
            y = y + self.lora(x, deterministic=deterministic, rngs=rngs)
        return y


def _write(buffer, update, index):
    """buffer [B, T, ...] with `update` [B, L, ...] stored at slots [index, index + L)."""
    start = (0, index) + (0,) * (buffer.ndim - 2)
    return jax.lax.dynamic_update_slice(buffer, update.astype(buffer.dtype), start)


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        h, d, e = cfg.num_heads, cfg.head_dim, cfg.hidden_size
        # Megatron/GLM scale the output projections' init by 1/sqrt(2 * num_layers).
        out_std = _INIT_STD / math.sqrt(2 * cfg.num_layers)
        self.dtype = cfg.compute_dtype
        self.query_key_value = Dense(
            (e,),
            (3, h, d),
            ("embed",),
            ("qkv", "heads", "kv"),
            cfg=cfg,
            name="query_key_value",
            rngs=rngs,
        )
        self.dense = Dense(
            (h, d),
            (e,),
            ("heads", "kv"),
            ("embed",),
            cfg=cfg,
            name="dense",
            init_std=out_std,
            rngs=rngs,
        )
        self.attention_dropout = Dropout(cfg.attention_dropout_rate)

    def __call__(
        self, x, mask, *, cache=None, index=None, prefix=None, deterministic=True, rngs=None
    ):
        """x [B, Lq, E], mask bool [B, Lq, Lk] -> ([B, Lq, E], cache).

        With a cache ({"key", "value"}: [B, T, H, D]) this step's keys/values are written at
        slot `index` first and the queries attend over all T slots (Lk == T). With `prefix`
        (keys/values [P, Lp, H, D] and a bool [P, Lp] mask of a prompt that B = P * K rows
        continue, `GLM.decode_step_shared`) each row also attends its prompt row's keys, which
        are read once per prompt row, not copied per continuation.
        """
        qkv = self.query_key_value(x, deterministic=deterministic, rngs=rngs)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, L, H, D] each
        if cache is not None:
            cache = {
                "key": _write(cache["key"], k, index),
                "value": _write(cache["value"], v, index),
            }
            k, v = cache["key"].astype(self.dtype), cache["value"].astype(self.dtype)
        q = q * jnp.asarray(1.0 / math.sqrt(q.shape[-1]), q.dtype)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        scores = jnp.where(mask[:, None], scores, _NEG)
        if prefix is not None:
            out = self._with_prefix(q, scores, v, prefix)
        else:
            probs = jax.nn.softmax(scores, axis=-1)
            probs = self.attention_dropout(probs, deterministic=deterministic, rngs=rngs)
            out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(self.dtype), v)
        return self.dense(out, deterministic=deterministic, rngs=rngs), cache

    def _with_prefix(self, q, own_scores, own_v, prefix):
        """One softmax over [prompt keys; own keys] for Lq == 1 (decoding, no dropout)."""
        (pk, pv), visible = prefix
        p, n = pk.shape[0], q.shape[0]
        kk, (h, d) = n // p, q.shape[2:]
        qg = q.reshape(p, kk, h, d)
        pre = jnp.einsum(
            "pkhd,plhd->phkl", qg, pk.astype(self.dtype), preferred_element_type=jnp.float32
        )
        pre = jnp.where(visible[:, None, None, :], pre, _NEG)
        own = own_scores.reshape(p, kk, h, -1).transpose(0, 2, 1, 3)  # [P, H, K, S]
        probs = jax.nn.softmax(jnp.concatenate([pre, own], axis=-1), axis=-1).astype(self.dtype)
        lp = pk.shape[1]
        out = jnp.einsum("phkl,plhd->pkhd", probs[..., :lp], pv.astype(self.dtype)) + jnp.einsum(
            "phks,pkshd->pkhd", probs[..., lp:], own_v.reshape(p, kk, -1, h, d)
        )
        return out.reshape(n, 1, h, d)


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        out_std = _INIT_STD / math.sqrt(2 * cfg.num_layers)
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

    def __call__(self, x, *, deterministic=True, rngs=None):
        h = self.dense_h_to_4h(x, deterministic=deterministic, rngs=rngs)
        h = jax.nn.gelu(h, approximate=True)  # GLM/Megatron use the tanh GeLU
        return self.dense_4h_to_h(h, deterministic=deterministic, rngs=rngs)


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
        x = x + self.dropout(h, **kw)
        x = x + self.dropout(self.mlp(self.post_attention_layernorm(x), **kw), **kw)
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
        mask = _visible(segment_ids, slots[:length], k_seg, k_part_a, slots)
        logits, layers = self._forward(
            tokens, positions, block_positions, mask, cache["layers"], 0, True, None
        )
        return logits, {"layers": layers, "segment_ids": k_seg, "part_a": k_part_a}

    def decode_step(self, token, position, block_position, cache, index):
        """One new token per row at slot `index`: -> (logits [B, 1, V], cache)."""
        index = jnp.asarray(index, jnp.int32)
        row_seg = jnp.max(cache["segment_ids"], axis=1, keepdims=True)  # [B, 1]
        k_seg = _write(cache["segment_ids"], row_seg, index)
        k_part_a = _write(cache["part_a"], jnp.zeros_like(row_seg), index)
        slots = jnp.arange(k_seg.shape[1])
        mask = _visible(row_seg, index[None], k_seg, k_part_a, slots)
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
