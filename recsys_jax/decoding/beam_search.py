"""Trie-constrained beam search over items, one XLA program (t5x-style `lax.while_loop`).

Each row's prompt is prefilled once into a KV cache that all its beams read
(`GLM.decode_step_shared`: never copied per beam), then every step feeds one token per beam;
reordering beams moves only their own generated tokens' keys/values. Beams carry their trie node, so
tokens that do not continue a real item are set to -inf before top-k: every finished beam is a
catalog item (or a candidate, with a restricted trie) and dead ends cannot occur. A beam finishes
when it picks `<eop>` at a node that completes an item; its score is the summed log-probability of
the item's tokens and `<eop>`, divided by `length ** length_penalty`. Part B positions are dynamic:
every generated token takes the mask's position and an intra id from `trie.next_intra` (1 for
`<sop>`, +1 per token of the item).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from recsys_jax.decoding import trie as trie_lib

NEG_INF = -1e30


def _length_norm(length: jax.Array, penalty: float) -> jax.Array:
    return jnp.power(jnp.asarray(length, jnp.float32), penalty)


def _gather_beams(tree, flat_index: jax.Array):
    """Reorder every leaf along its leading (batch * beam) axis."""
    return jax.tree.map(lambda x: x[flat_index], tree)


@functools.partial(
    jax.jit,
    static_argnames=("graphdef", "beam", "top_k", "eop", "sop", "length_penalty", "max_steps"),
)
def beam_search(
    graphdef,
    state,
    prompt: dict,
    mask_pos: jax.Array,
    trie: trie_lib.Trie,
    roots: jax.Array,
    exclude: jax.Array,
    *,
    beam: int,
    top_k: int,
    eop: int,
    sop: int,
    length_penalty: float = 0.0,
    max_steps: int | None = None,
    start: tuple | None = None,
):
    """-> (items [B, top_k] int32, -1 where fewer items exist; scores [B, top_k]).

    prompt: [B, Lp] tokens / positions / block_positions / segment_ids / part_a: Part A
        ending in the [MASK] whose answer is generated (padding anywhere, segment 0).
    mask_pos: [B] the position id of that mask (every Part B token takes it).
    roots: [B] each row's trie root; exclude: [B, H] item ids never returned (-1 = none).
    start: None, or (first token, its intra id, the first item token's intra id), each [B],
        for a prompt whose Part B span is already open (`decoding.inputs.DecoderInputs`):
        step 0 feeds that token instead of `<sop>`, and an item finishes when its trie node
        completes it, without an `<eop>` (the span continues the user's sequence).
    """
    model = nnx.merge(graphdef, state)
    batch, prompt_len = prompt["tokens"].shape
    steps = (trie.max_depth + 1) if max_steps is None else max_steps
    _, prefix = model.prefill(
        prompt["tokens"],
        prompt["positions"],
        prompt["block_positions"],
        prompt["segment_ids"],
        prompt["part_a"],
        model.init_cache(batch, prompt_len),
    )
    base = (jnp.arange(batch) * beam)[:, None]

    # Step 0 is peeled off the loop: every beam would feed the same <sop> at its root, so it
    # runs once per row ([B] rows, not [B * beam]) and its cache is then copied to the beams.
    # No item ends at a root, so nothing finishes at step 0.
    if start is None:
        first_token = jnp.full((batch,), sop, jnp.int32)
        first_intra, item_intra = jnp.ones((batch,), jnp.int32), jnp.full((batch,), 2, jnp.int32)
    else:
        first_token, first_intra, item_intra = (jnp.asarray(x, jnp.int32) for x in start)
    score_eop = start is None
    first_logits, first_cache = model.decode_step_shared(
        first_token[:, None],
        mask_pos[:, None],
        first_intra[:, None],
        prefix,
        model.init_cache(batch, steps),
        0,
    )
    first_logp = jax.nn.log_softmax(first_logits[:, 0].astype(jnp.float32), axis=-1)
    # Excluded items are never entered where they end the path (a one-token item at the root,
    # the last token of a longer one): a beam spent on them would return nothing, and with
    # long histories whole beams were lost that way.
    banned_table = trie_lib.banned_items(trie, exclude)
    first_nodes = trie.root_next[roots]  # [B, V]: the dense first level starts every item
    allowed = (first_nodes >= 0) & ~trie_lib.excluded_leaf(trie, first_nodes, banned_table)
    logp0, token0 = jax.lax.top_k(jnp.where(allowed, first_logp, NEG_INF), beam)
    logp0 = jnp.where(logp0 > NEG_INF / 2, logp0, NEG_INF)  # fewer items than beams
    token0 = token0.astype(jnp.int32)
    expand = lambda x: jnp.repeat(x, beam, axis=0)
    flat_pos = expand(mask_pos)[:, None]
    init = {
        "step": jnp.ones((), jnp.int32),
        "cache": jax.tree.map(expand, first_cache),
        "token": token0,
        "intra": jnp.broadcast_to(item_intra[:, None], (batch, beam)),
        "node": trie.root_next[roots[:, None], token0].astype(jnp.int32),
        "logp": logp0,
        "done_score": jnp.full((batch, top_k), NEG_INF),
        "done_item": jnp.full((batch, top_k), -1, jnp.int32),
    }

    def finish(done_score, done_item, node, fin_logp, live, length):
        """Merge the beams whose node completes a (not excluded) item into the results."""
        item = trie.end_item[node]
        banned = jnp.any(item[..., None] == exclude[:, None, :], axis=-1)
        ok = live & (item >= 0) & ~banned
        fin = jnp.where(ok, fin_logp / _length_norm(length, length_penalty), NEG_INF)
        scores = jnp.concatenate([done_score, fin], axis=1)
        items = jnp.concatenate([done_item, jnp.where(ok, item, -1)], axis=1)
        done_score, pick = jax.lax.top_k(scores, top_k)
        return done_score, jnp.take_along_axis(items, pick, axis=1)

    if not score_eop:
        # An open span finishes an item where its node completes one, without scoring a token
        # after it, so beams are finished as soon as they are extended and the next forward
        # pass runs only while some beam can still continue (never, for one-token items).
        init["done_score"], init["done_item"] = finish(
            init["done_score"], init["done_item"], init["node"], logp0, logp0 > NEG_INF / 2, 1
        )

    def cond(s):
        live = s["logp"] > NEG_INF / 2
        if not score_eop:
            live = live & jnp.any(trie_lib.children(trie, s["node"])[0] >= 0, axis=-1)
        return (s["step"] < steps) & jnp.any(live)

    def body(s):
        logits, cache = model.decode_step_shared(
            s["token"].reshape(-1, 1),
            flat_pos,
            s["intra"].reshape(-1, 1),
            prefix,
            s["cache"],
            s["step"],
        )
        logp = jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1)
        logp = logp.reshape(batch, beam, -1)
        live = s["logp"] > NEG_INF / 2

        done_score, done_item = s["done_score"], s["done_item"]
        if score_eop:  # finishing: <eop> where the node completes an item (item tokens + 1)
            done_score, done_item = finish(
                done_score, done_item, s["node"], s["logp"] + logp[..., eop], live, s["step"] + 1
            )

        # Continuing: the best `beam` (beam, token) pairs that stay inside the trie; only the
        # (static-width) child window of each beam's node is scored.
        child_tok, child_node = trie_lib.children(trie, s["node"])  # [B, K, F]
        picked = jnp.take_along_axis(logp, jnp.maximum(child_tok, 0), axis=-1)
        ok_child = (child_tok >= 0) & ~trie_lib.excluded_leaf(trie, child_node, banned_table)
        cand = jnp.where(ok_child & live[..., None], s["logp"][..., None] + picked, NEG_INF)
        logp_new, flat = jax.lax.top_k(cand.reshape(batch, -1), beam)
        src = flat // trie.fanout
        token = jnp.take_along_axis(child_tok.reshape(batch, -1), flat, 1)
        node = jnp.take_along_axis(child_node.reshape(batch, -1), flat, 1)
        logp_new = jnp.where(logp_new > NEG_INF / 2, logp_new, NEG_INF)
        src_flat = (base + src).reshape(-1)
        intra = trie_lib.next_intra(
            jnp.take_along_axis(s["intra"], src, 1), jnp.zeros_like(token, bool)
        )
        if not score_eop:
            done_score, done_item = finish(
                done_score, done_item, node, logp_new, logp_new > NEG_INF / 2, s["step"] + 1
            )
        return {
            "step": s["step"] + 1,
            "cache": _gather_beams(cache, src_flat),
            "token": token.astype(jnp.int32),
            "intra": intra,
            "node": node.astype(jnp.int32),
            "logp": logp_new,
            "done_score": done_score,
            "done_item": done_item,
        }

    out = jax.lax.while_loop(cond, body, init)
    return out["done_item"], out["done_score"]
