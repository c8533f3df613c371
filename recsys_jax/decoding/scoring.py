"""Exact scores of given answers: log P(answer tokens, <eop> | prompt) for N candidates.

The prompt is prefilled once per row and read by all its candidates (never copied), and every
candidate is teacher-forced through the same decode step the beam search uses (same dynamic
positions), so a candidate's score here equals the score beam search would give the same item.
Used for direct recommendation over 100 candidates and for P("yes") on yes/no prompts.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recsys_jax.decoding import trie as trie_lib


@functools.partial(jax.jit, static_argnames=("graphdef", "sop", "eop"))
def score_candidates(
    graphdef,
    state,
    prompt: dict,
    mask_pos: jax.Array,
    cand_tokens: jax.Array,
    cand_len: jax.Array,
    *,
    sop: int,
    eop: int,
) -> jax.Array:
    """prompt [B, Lp]; cand_tokens [B, N, M] (padded), cand_len [B, N] (0 = no candidate).
    -> [B, N] summed log-probabilities of each candidate's tokens and `<eop>` (-inf if none)."""
    model = nnx.merge(graphdef, state)
    batch, prompt_len = prompt["tokens"].shape
    _, n, m = cand_tokens.shape
    _, prefix = model.prefill(
        prompt["tokens"],
        prompt["positions"],
        prompt["block_positions"],
        prompt["segment_ids"],
        prompt["part_a"],
        model.init_cache(batch, prompt_len),
    )
    cache = model.init_cache(batch * n, m + 1)
    flat_tokens = cand_tokens.reshape(batch * n, m)
    flat_len = cand_len.reshape(batch * n)
    # Inputs <sop> t1..tm, targets t1..tm <eop> (eop placed at each candidate's own length).
    inputs = jnp.concatenate([jnp.full((batch * n, 1), sop, jnp.int32), flat_tokens], axis=1)
    steps = jnp.arange(m + 1)
    targets = jnp.where(
        steps[None] == flat_len[:, None],
        eop,
        jnp.concatenate([flat_tokens, jnp.zeros((batch * n, 1), jnp.int32)], 1),
    )
    valid = steps[None] <= flat_len[:, None]
    positions = jnp.repeat(mask_pos, n)[:, None]

    def body(carry, t):
        cache, intra = carry
        logits, cache = model.decode_step_shared(
            inputs[:, t][:, None], positions, intra[:, None], prefix, cache, t
        )
        logp = jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1)
        picked = jnp.take_along_axis(logp, targets[:, t][:, None], axis=1)[:, 0]
        intra = trie_lib.next_intra(intra, jnp.zeros_like(intra, bool))
        return (cache, intra), jnp.where(valid[:, t], picked, 0.0)

    _, per_step = jax.lax.scan(body, (cache, jnp.ones((batch * n,), jnp.int32)), steps)
    total = per_step.sum(axis=0).reshape(batch, n)
    return jnp.where(cand_len > 0, total, -jnp.inf)


def pad_candidates(entity_pool, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[B, N] item ids (-1 = none) -> (tokens [B, N, M], lengths [B, N])."""
    candidates = np.asarray(candidates)
    lens = np.array([[len(entity_pool[i]) if i >= 0 else 0 for i in row] for row in candidates])
    m = max(1, int(lens.max(initial=0)))
    tokens = np.zeros((*candidates.shape, m), np.int32)
    for b, row in enumerate(candidates):
        for j, item in enumerate(row):
            if item >= 0:
                tokens[b, j, : lens[b, j]] = entity_pool[item]
    return tokens, lens.astype(np.int32)
