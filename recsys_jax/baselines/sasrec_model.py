"""The SASRec network (Kang & McAuley, 2018) in Flax NNX, RecBole's layout: item embedding
(id 0 = padding) + learned positions -> LayerNorm -> dropout -> post-LN causal Transformer
blocks; item scores are dot products with the tied item embeddings. Training, evaluation and
the CLI are in `recsys_jax.baselines.sasrec`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass
class SASRecConfig:
    num_items: int
    max_len: int = 50
    hidden: int = 64
    num_layers: int = 2
    num_heads: int = 1
    inner: int = 256  # feed-forward width (RecBole inner_size)
    dropout: float = 0.5  # embeddings, attention output and feed-forward
    attention_dropout: float = 0.5  # attention probabilities
    layer_norm_eps: float = 1e-12
    init_std: float = 0.02


# -- model -------------------------------------------------------------------------------------


class CausalSelfAttention(nnx.Module):
    def __init__(self, cfg: SASRecConfig, *, rngs: nnx.Rngs):
        if cfg.hidden % cfg.num_heads:
            raise ValueError(f"hidden {cfg.hidden} is not divisible by {cfg.num_heads} heads")
        init = nnx.initializers.normal(cfg.init_std)
        dense = lambda: nnx.Linear(cfg.hidden, cfg.hidden, kernel_init=init, rngs=rngs)
        self.query, self.key, self.value, self.out = dense(), dense(), dense(), dense()
        self.attention_dropout = nnx.Dropout(cfg.attention_dropout)
        self.dropout = nnx.Dropout(cfg.dropout)
        self.norm = nnx.LayerNorm(cfg.hidden, epsilon=cfg.layer_norm_eps, rngs=rngs)
        self.num_heads = cfg.num_heads

    def __call__(self, x, mask, *, deterministic: bool, rngs: nnx.Rngs | None = None):
        b, length, h = x.shape
        heads, d = self.num_heads, h // self.num_heads
        split = lambda y: y.reshape(b, length, heads, d)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
        logits = jnp.where(mask[:, None], logits, jnp.finfo(logits.dtype).min)
        probs = jax.nn.softmax(logits, axis=-1)
        probs = self.attention_dropout(probs, deterministic=deterministic, rngs=rngs)
        y = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, length, h)
        y = self.dropout(self.out(y), deterministic=deterministic, rngs=rngs)
        return self.norm(y + x)


class FeedForward(nnx.Module):
    def __init__(self, cfg: SASRecConfig, *, rngs: nnx.Rngs):
        init = nnx.initializers.normal(cfg.init_std)
        self.up = nnx.Linear(cfg.hidden, cfg.inner, kernel_init=init, rngs=rngs)
        self.down = nnx.Linear(cfg.inner, cfg.hidden, kernel_init=init, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout)
        self.norm = nnx.LayerNorm(cfg.hidden, epsilon=cfg.layer_norm_eps, rngs=rngs)

    def __call__(self, x, *, deterministic: bool, rngs: nnx.Rngs | None = None):
        y = self.down(jax.nn.gelu(self.up(x), approximate=False))
        y = self.dropout(y, deterministic=deterministic, rngs=rngs)
        return self.norm(y + x)


class Block(nnx.Module):
    def __init__(self, cfg: SASRecConfig, *, rngs: nnx.Rngs):
        self.attention = CausalSelfAttention(cfg, rngs=rngs)
        self.feed_forward = FeedForward(cfg, rngs=rngs)

    def __call__(self, x, mask, *, deterministic: bool, rngs: nnx.Rngs | None = None):
        x = self.attention(x, mask, deterministic=deterministic, rngs=rngs)
        return self.feed_forward(x, deterministic=deterministic, rngs=rngs)


class SASRec(nnx.Module):
    """`model(tokens)` -> hidden states [B, L, hidden]; `model.scores(hidden)` -> [.., items].
    `tokens` [B, L] int: 0 = padding, item i -> i + 1, oldest first, padding on the right."""

    def __init__(self, cfg: SASRecConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        init = nnx.initializers.normal(cfg.init_std)
        self.item_embedding = nnx.Embed(
            cfg.num_items + 1, cfg.hidden, embedding_init=init, rngs=rngs
        )
        self.position_embedding = nnx.Embed(cfg.max_len, cfg.hidden, embedding_init=init, rngs=rngs)
        self.norm = nnx.LayerNorm(cfg.hidden, epsilon=cfg.layer_norm_eps, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout)
        self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])

    def __call__(self, tokens, *, deterministic: bool = True, rngs: nnx.Rngs | None = None):
        length = tokens.shape[1]
        if length > self.cfg.max_len:
            raise ValueError(f"sequence length {length} > max_len {self.cfg.max_len}")
        x = self.item_embedding(tokens) + self.position_embedding(jnp.arange(length))[None]
        x = self.dropout(self.norm(x), deterministic=deterministic, rngs=rngs)
        causal = jnp.tril(jnp.ones((length, length), bool))
        mask = causal[None] & (tokens > 0)[:, None, :]  # [B, query, key]
        for block in self.blocks:
            x = block(x, mask, deterministic=deterministic, rngs=rngs)
        return x

    def scores(self, hidden):
        """Dot product with every real item's embedding (padding row 0 excluded)."""
        return hidden @ self.item_embedding.embedding[...][1:].T
