"""GLM self-attention: the prefix-LM visibility rule and the attention layer with its
functional KV cache.

Query i attends key j iff segment_ids[i] == segment_ids[j] != 0 and (part_a[j] == 1 or
j <= i): GLM's prefix-LM mask, generalised to packed rows (docs/design.md, GLM). Scores and
softmax are float32 whatever the compute dtype.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from recsys_jax.model.config import ModelConfig
from recsys_jax.model.dropout import Dropout
from recsys_jax.model.layers import INIT_STD, Dense

_NEG = float(jnp.finfo(jnp.float32).min)  # finite: a row with no visible key gives no NaN


def visible(q_seg, q_slot, k_seg, k_part_a, k_slot):
    """bool [B, Lq, Lk] from query segments/slots [B, Lq]/[Lq] and key ones [B, Lk]/[Lk]."""
    same = (q_seg[:, :, None] == k_seg[:, None, :]) & (k_seg[:, None, :] != 0)
    seen = (k_part_a[:, None, :] == 1) | (k_slot[None, None, :] <= q_slot[None, :, None])
    return same & seen


def attention_mask(segment_ids: jax.Array, part_a: jax.Array) -> jax.Array:
    """bool [B, L, L]: True where query i may attend key j (the rule in the module doc).

    Padding queries get an all-False row; attention turns it into harmless finite values.
    """
    slots = jnp.arange(segment_ids.shape[1])
    return visible(segment_ids, slots, segment_ids, part_a, slots)


def write_slots(buffer, update, index):
    """buffer [B, T, ...] with `update` [B, L, ...] stored at slots [index, index + L)."""
    start = (0, index) + (0,) * (buffer.ndim - 2)
    return jax.lax.dynamic_update_slice(buffer, update.astype(buffer.dtype), start)


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        h, d, e = cfg.num_heads, cfg.head_dim, cfg.hidden_size
        # Megatron/GLM scale the output projections' init by 1/sqrt(2 * num_layers).
        out_std = INIT_STD / math.sqrt(2 * cfg.num_layers)
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

    @jax.named_scope("attention")  # profiles group ops by it (scripts/profile_step.py)
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
                "key": write_slots(cache["key"], k, index),
                "value": write_slots(cache["value"], v, index),
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
