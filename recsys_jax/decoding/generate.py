"""Free text generation (explanations, review summaries): greedy or sampled, no trie.

The same prefill + `decode_step` loop as the item beam search, inside one `lax.while_loop`;
Part B positions are dynamic the same way (the mask's position, intra id +1 per token).
Generation stops at `<eop>` or after `max_new` tokens.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from recsys_jax.decoding import trie as trie_lib


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new", "eop", "sop", "banned"))
def generate_text(
    graphdef,
    state,
    prompt: dict,
    mask_pos: jax.Array,
    key: jax.Array,
    *,
    max_new: int,
    eop: int,
    sop: int,
    temperature: float = 0.0,
    banned: tuple[int, ...] = (),
):
    """-> (tokens [B, max_new] int32 padded with `eop` after the end, lengths [B]).

    temperature 0 = greedy; > 0 samples from softmax(logits / temperature). `banned` token
    ids (e.g. the GLM specials other than <eop>) are never produced.
    """
    model = nnx.merge(graphdef, state)
    batch, prompt_len = prompt["tokens"].shape
    cache = model.init_cache(batch, prompt_len + max_new)
    _, cache = model.prefill(
        prompt["tokens"],
        prompt["positions"],
        prompt["block_positions"],
        prompt["segment_ids"],
        prompt["part_a"],
        cache,
    )
    pos = mask_pos[:, None]

    def cond(s):
        return (s["step"] < max_new) & ~jnp.all(s["done"])

    def body(s):
        logits, cache = model.decode_step(
            s["token"][:, None], pos, s["intra"][:, None], s["cache"], prompt_len + s["step"]
        )
        logits = logits[:, 0].astype(jnp.float32)
        if banned:
            logits = logits.at[:, jnp.asarray(banned)].set(-jnp.inf)
        key, sub = jax.random.split(s["key"])
        sampled = jax.random.categorical(sub, logits / jnp.maximum(temperature, 1e-6))
        token = jnp.where(temperature > 0, sampled, jnp.argmax(logits, -1)).astype(jnp.int32)
        token = jnp.where(s["done"], eop, token)
        out = s["out"].at[:, s["step"]].set(token)
        length = jnp.where(s["done"], s["length"], s["step"] + (token != eop))
        return {
            "step": s["step"] + 1,
            "cache": cache,
            "token": token,
            "key": key,
            "intra": trie_lib.next_intra(s["intra"], jnp.zeros_like(token, bool)),
            "done": s["done"] | (token == eop),
            "out": out,
            "length": length,
        }

    init = {
        "step": jnp.zeros((), jnp.int32),
        "cache": cache,
        "token": jnp.full((batch,), sop, jnp.int32),
        "key": key,
        "intra": jnp.ones((batch,), jnp.int32),
        "done": jnp.zeros((batch,), bool),
        "out": jnp.full((batch, max_new), eop, jnp.int32),
        "length": jnp.zeros((batch,), jnp.int32),
    }
    s = jax.lax.while_loop(cond, body, init)
    return s["out"], s["length"]
