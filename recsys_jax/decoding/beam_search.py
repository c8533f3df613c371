"""Trie-constrained beam search over items, one XLA program (t5x-style `lax.while_loop`).

Each row's prompt is prefilled once into a KV cache that all its beams read
(`GLM.decode_step_shared`: never copied per beam), then every step feeds one token per beam;
reordering beams moves only their own generated tokens' keys/values. Beams carry their trie node, so tokens that do not continue a
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
    _, prefix = model.prefill(prompt["tokens"], prompt["positions"], prompt["block_positions"],
                              prompt["segment_ids"], prompt["part_a"],
                              model.init_cache(batch, prompt_len))
    cache = model.init_cache(batch * beam, steps)
    expand = lambda x: jnp.repeat(x, beam, axis=0)
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

    roots_b = flat_roots.reshape(batch, beam)

    def from_roots(s, logp):
        """Step 0: every live beam sits at its root; the dense first level says what may start
        an item. Two-stage top-k (per beam, then over beams) is exact and avoids one huge sort."""
        allowed = trie.root_next[roots_b] >= 0  # [B, K, V]
        cand = jnp.where(allowed, s["logp"][..., None] + logp, NEG_INF)
        per_beam, tok = jax.lax.top_k(cand, beam)  # [B, K, beam]
        best, flat = jax.lax.top_k(per_beam.reshape(batch, -1), beam)
        src = flat // beam
        token = jnp.take_along_axis(tok.reshape(batch, -1), flat, 1).astype(jnp.int32)
        node = trie.root_next[roots_b, token]
        return best, src, token, node

    def from_children(s, logp):
        """Later steps: only the (static-width) child window of each beam's node is scored."""
        child_tok, child_node = trie_lib.children(trie, s["node"])  # [B, K, F]
        picked = jnp.take_along_axis(logp, jnp.maximum(child_tok, 0), axis=-1)
        cand = jnp.where(child_tok >= 0, s["logp"][..., None] + picked, NEG_INF)
        best, flat = jax.lax.top_k(cand.reshape(batch, -1), beam)
        src = flat // trie.fanout
        token = jnp.take_along_axis(child_tok.reshape(batch, -1), flat, 1)
        node = jnp.take_along_axis(child_node.reshape(batch, -1), flat, 1)
        return best, src, token, node

    def body(s):
        logits, cache = model.decode_step_shared(
            s["token"].reshape(-1, 1), flat_pos, s["intra"].reshape(-1, 1), prefix, s["cache"],
            s["step"])
        logp = jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1)
        logp = logp.reshape(batch, beam, -1)
        live = s["logp"] > NEG_INF / 2
        s_live = dict(s, logp=jnp.where(live, s["logp"], NEG_INF))

        # Finishing: <eop> where the node completes an item (never at a root).
        item = trie.end_item[s["node"]]
        banned = jnp.any(item[..., None] == exclude[:, None, :], axis=-1)
        length = s["step"] + 1  # item tokens + <eop>
        fin_logp = s["logp"] + logp[..., eop]
        ok = live & (item >= 0) & ~banned
        fin = jnp.where(ok, fin_logp / _length_norm(length, length_penalty), NEG_INF)
        scores = jnp.concatenate([s["done_score"], fin], axis=1)
        items = jnp.concatenate([s["done_item"], jnp.where(ok, item, -1)], axis=1)
        done_score, pick = jax.lax.top_k(scores, top_k)
        done_item = jnp.take_along_axis(items, pick, axis=1)

        # Continuing: the best `beam` (beam, token) pairs that stay inside the trie.
        logp_new, src, token, node = jax.lax.cond(
            s["step"] == 0, from_roots, from_children, s_live, logp)
        logp_new = jnp.where(logp_new > NEG_INF / 2, logp_new, NEG_INF)
        src_flat = (base + src).reshape(-1)
        intra = trie_lib.next_intra(jnp.take_along_axis(s["intra"], src, 1),
                                    jnp.zeros_like(token, bool))
        return {"step": s["step"] + 1, "cache": _gather_beams(cache, src_flat),
                "token": token.astype(jnp.int32), "intra": intra,
                "node": node.astype(jnp.int32), "logp": logp_new,
                "done_score": done_score, "done_item": done_item}

    out = jax.lax.while_loop(cond, body, init)
    return out["done_item"], out["done_score"]
