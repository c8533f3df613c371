"""Trie-constrained beam search over items, one XLA program (t5x-style `lax.while_loop`).

Each row's prompt is prefilled once into a KV cache, expanded to `beam` copies, then every
step feeds one token per beam. Beams carry their trie node, so tokens that do not continue a
real item are set to -inf before top-k: every finished beam is a catalog item (or a candidate,
with a restricted trie) and dead ends cannot occur. A beam finishes when it picks `<eop>` at a
node that completes an item; its score is the summed log-probability of the item's tokens and
`<eop>`, divided by `length ** length_penalty`. Part B positions are dynamic: every generated
token takes the mask's position and an intra id from `trie.next_intra` (1 for `<sop>`, +1 per
token of the item).
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from recsys_jax.decoding import trie as trie_lib

NEG_INF = -1e30


def _length_norm(length: jax.Array, penalty: float) -> jax.Array:
    return jnp.power(length.astype(jnp.float32), penalty)


def _gather_beams(tree, flat_index: jax.Array):
    """Reorder every leaf along its leading (batch * beam) axis."""
    return jax.tree.map(lambda x: x[flat_index], tree)


@functools.partial(jax.jit, static_argnames=("graphdef", "beam", "top_k", "eop", "sop",
                                             "length_penalty", "max_steps"))
def beam_search(graphdef, state, prompt: dict, mask_pos: jax.Array, trie: trie_lib.Trie,
                roots: jax.Array, exclude: jax.Array, *, beam: int, top_k: int, eop: int,
                sop: int, length_penalty: float = 0.0, max_steps: Optional[int] = None):
    """-> (items [B, top_k] int32, -1 where fewer items exist; scores [B, top_k]).

    prompt: [B, Lp] tokens / positions / block_positions / segment_ids / part_a: Part A
        ending in the [MASK] whose answer is generated (padding anywhere, segment 0).
    mask_pos: [B] the position id of that mask (every Part B token takes it).
    roots: [B] each row's trie root; exclude: [B, H] item ids never returned (-1 = none).
    """
    model = nnx.merge(graphdef, state)
    batch, prompt_len = prompt["tokens"].shape
    steps = (trie.max_depth + 1) if max_steps is None else max_steps
    cache = model.init_cache(batch, prompt_len + steps)
    _, cache = model.prefill(prompt["tokens"], prompt["positions"], prompt["block_positions"],
                             prompt["segment_ids"], prompt["part_a"], cache)
    expand = lambda x: jnp.repeat(x, beam, axis=0)
    cache = jax.tree.map(expand, cache)
    flat_pos = expand(mask_pos)[:, None]
    flat_roots = expand(roots)
    base = (jnp.arange(batch) * beam)[:, None]

    init = {
        "step": jnp.zeros((), jnp.int32),
        "cache": cache,
        "token": jnp.full((batch, beam), sop, jnp.int32),
        "intra": jnp.ones((batch, beam), jnp.int32),  # <sop> has intra id 1
        "node": jnp.broadcast_to(roots[:, None], (batch, beam)).astype(jnp.int32),
        # Only beam 0 is live at the start so the first top-k does not pick duplicates.
        "logp": jnp.where(jnp.arange(beam) == 0, 0.0, NEG_INF)[None].repeat(batch, 0),
        "done_score": jnp.full((batch, top_k), NEG_INF),
        "done_item": jnp.full((batch, top_k), -1, jnp.int32),
    }

    def cond(s):
        alive = jnp.any(s["logp"] > NEG_INF / 2)
        return (s["step"] < steps) & alive

    def body(s):
        logits, cache = model.decode_step(
            s["token"].reshape(-1, 1), flat_pos, s["intra"].reshape(-1, 1), s["cache"],
            prompt_len + s["step"])
        logp = jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1)
        vocab = logp.shape[-1]
        logp = logp.reshape(batch, beam, vocab)
        allowed = trie_lib.allowed_tokens_mask(trie, s["node"], flat_roots.reshape(batch, beam), eop)
        live = s["logp"] > NEG_INF / 2
        cand = jnp.where(allowed & live[..., None], s["logp"][..., None] + logp, NEG_INF)

        # Finishing: <eop> completes the node's item.
        item = trie.end_item[s["node"]]
        banned = jnp.any(item[..., None] == exclude[:, None, :], axis=-1) & (item >= 0)
        length = s["step"] + 1  # item tokens + <eop>
        fin = jnp.where(banned, NEG_INF, cand[..., eop] / _length_norm(length, length_penalty))
        scores = jnp.concatenate([s["done_score"], fin], axis=1)
        items = jnp.concatenate([s["done_item"], jnp.where(fin > NEG_INF / 2, item, -1)], axis=1)
        done_score, pick = jax.lax.top_k(scores, top_k)
        done_item = jnp.take_along_axis(items, pick, axis=1)

        # Continuing: best `beam` (beam, token) pairs other than <eop>.
        cont = cand.at[..., eop].set(NEG_INF).reshape(batch, beam * vocab)
        logp_new, flat = jax.lax.top_k(cont, beam)
        src, token = flat // vocab, (flat % vocab).astype(jnp.int32)
        src_flat = (base + src).reshape(-1)
        roots_b = flat_roots.reshape(batch, beam)
        node = trie_lib.next_node(trie, jnp.take_along_axis(s["node"], src, 1), roots_b, token)
        intra = trie_lib.next_intra(jnp.take_along_axis(s["intra"], src, 1),
                                    jnp.zeros_like(token, bool))
        return {"step": s["step"] + 1, "cache": _gather_beams(cache, src_flat), "token": token,
                "intra": intra, "node": node, "logp": logp_new,
                "done_score": done_score, "done_item": done_item}

    out = jax.lax.while_loop(cond, body, init)
    return out["done_item"], out["done_score"]
