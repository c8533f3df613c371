"""Decoding latency: trie-constrained beam search in one XLA program vs a host-side Python trie.

    python scripts/bench_decode.py [--model small] [--catalogs 12000 120000 1200000]
                                   [--batches 1 64] [--beam 20] [--reference-batches 1]

Synthetic catalogs: every item is a 4-token code (3 levels of 128 codes + a level-4 code that
breaks collisions, like a semantic id) appended to an 8k text vocabulary; prompts are 64 random
tokens. The model has random weights (latency does not depend on them). Prints one JSON object:
ms per user (median of `--repeats` timed calls after one warm-up/compile call) per catalog size
and batch, the compile time, the 12k -> largest growth factor, and the speed-up over the
host-side reference (same model and cache, but each step returns logits to Python, which walks
a dict trie to mask them, picks the top-k with NumPy and reorders the cache).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recsys_jax.decoding import trie as trie_lib
from recsys_jax.decoding.beam_search import beam_search
from recsys_jax.example import SpecialIds
from recsys_jax.model import GLM, MODEL_PRESETS

TEXT_VOCAB = 8000
LEVELS, CODES = 3, 128
PROMPT_LEN = 64


def synthetic_catalog(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    prefix = rng.integers(0, CODES, size=(n, LEVELS))
    # Collision code: the rank of an item among items sharing its prefix.
    keys = prefix[:, 0] * CODES * CODES + prefix[:, 1] * CODES + prefix[:, 2]
    order = np.lexsort((np.arange(n), keys))
    sorted_keys = keys[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_keys)) + 1]
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    last = np.empty(n, np.int64)
    last[order] = rank
    n_last = int(last.max()) + 1
    base = TEXT_VOCAB + 6  # after the GLM specials
    tokens = np.column_stack(
        [base + lvl * CODES + prefix[:, lvl] for lvl in range(LEVELS)]
        + [base + LEVELS * CODES + last]
    )
    vocab = base + LEVELS * CODES + n_last
    special = SpecialIds(*(TEXT_VOCAB + k for k in range(6)))
    return [tuple(map(int, row)) for row in tokens], vocab, special


def make_prompt(batch: int, special: SpecialIds, seed: int = 1):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, TEXT_VOCAB, (batch, PROMPT_LEN)).astype(np.int32)
    tokens[:, -1] = special.mask
    return (
        {
            "tokens": tokens,
            "positions": np.tile(np.arange(PROMPT_LEN, dtype=np.int32), (batch, 1)),
            "block_positions": np.zeros((batch, PROMPT_LEN), np.int32),
            "segment_ids": np.ones((batch, PROMPT_LEN), np.int32),
            "part_a": np.ones((batch, PROMPT_LEN), np.int32),
        },
        np.full(batch, PROMPT_LEN - 1, np.int32),
    )


# -- the host-side reference -----------------------------------------------------------------


def dict_trie(pool):
    root: dict = {}
    for item, seq in enumerate(pool):
        node = root
        for t in seq:
            node = node.setdefault(t, {})
        node[-1] = item  # end marker
    return root


class HostTrieDecoder:
    """Step-by-step decoding driven from Python: the jitted pieces are compiled once."""

    def __init__(self, model, batch, beam, max_steps):
        graphdef, self.state = nnx.split(model)
        self.batch, self.beam, self.max_steps = batch, beam, max_steps

        def prefill(state, prompt):  # the same shared-prompt cache as `beam_search`
            m = nnx.merge(graphdef, state)
            _, prefix = m.prefill(
                prompt["tokens"],
                prompt["positions"],
                prompt["block_positions"],
                prompt["segment_ids"],
                prompt["part_a"],
                m.init_cache(batch, PROMPT_LEN),
            )
            return prefix, m.init_cache(batch * beam, max_steps)

        def step(state, prefix, cache, token, pos, intra, index):
            m = nnx.merge(graphdef, state)
            logits, cache = m.decode_step_shared(token, pos, intra, prefix, cache, index)
            return jax.nn.log_softmax(logits[:, 0], -1), cache

        self.prefill = jax.jit(prefill)
        self.step = jax.jit(step)
        self.gather = jax.jit(lambda cache, idx: jax.tree.map(lambda x: x[idx], cache))

    def __call__(self, prompt, mask_pos, root, top_k, special):
        batch, beam = self.batch, self.beam
        prefix, cache = self.prefill(self.state, prompt)
        pos = jnp.asarray(np.repeat(mask_pos, beam)[:, None])
        nodes = [[root] + [None] * (beam - 1) for _ in range(batch)]
        logp = np.full((batch, beam), -np.inf)
        logp[:, 0] = 0
        tokens = np.full((batch, beam), special.sop, np.int32)
        done = [[] for _ in range(batch)]
        for t in range(self.max_steps):
            out, cache = self.step(
                self.state,
                prefix,
                cache,
                jnp.asarray(tokens.reshape(-1, 1)),
                pos,
                jnp.full((batch * beam, 1), t + 1, jnp.int32),
                jnp.int32(t),
            )
            out = np.asarray(out).reshape(batch, beam, -1)
            src_all = np.zeros((batch, beam), np.int64)
            tok_all = np.full((batch, beam), special.pad, np.int32)
            for b in range(batch):
                cands = []
                for k in range(beam):
                    node = nodes[b][k]
                    if node is None:
                        continue
                    for token, child in node.items():
                        if token == -1:
                            done[b].append((logp[b, k] + out[b, k, special.eop], child))
                        else:
                            cands.append((logp[b, k] + out[b, k, token], k, token))
                cands.sort(reverse=True)
                cands = cands[:beam]
                new_nodes = [None] * beam
                for j, (score, k, token) in enumerate(cands):
                    new_nodes[j] = nodes[b][k][token]
                    logp[b, j], src_all[b, j], tok_all[b, j] = score, k, token
                logp[b, len(cands) :] = -np.inf
                nodes[b] = new_nodes
            flat = (np.arange(batch)[:, None] * beam + src_all).reshape(-1)
            cache = self.gather(cache, jnp.asarray(flat))
            tokens = tok_all
        return [sorted(d, reverse=True)[:top_k] for d in done]


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="small", choices=sorted(MODEL_PRESETS))
    parser.add_argument("--catalogs", type=int, nargs="+", default=[12_000, 120_000, 1_200_000])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--beam", type=int, default=20)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-batches", type=int, nargs="*", default=[1])
    args = parser.parse_args()
    result = {
        "device": str(jax.devices()[0].device_kind),
        "platform": jax.default_backend(),
        "host": platform.processor() or platform.machine(),
        "model": args.model,
        "beam": args.beam,
        "top_k": args.top_k,
        "prompt_len": PROMPT_LEN,
        "jax": jax.__version__,
        "catalogs": {},
    }
    for n in args.catalogs:
        pool, vocab, special = synthetic_catalog(n)
        cfg = MODEL_PRESETS[args.model]
        import dataclasses

        cfg = dataclasses.replace(
            cfg, vocab_size=vocab, dropout_rate=0.0, attention_dropout_rate=0.0
        )
        model = GLM(cfg, rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(model)
        t0 = time.perf_counter()
        trie = trie_lib.catalog_trie(pool, vocab).device_put()
        entry = {
            "items": n,
            "vocab": vocab,
            "trie_build_s": round(time.perf_counter() - t0, 2),
            "trie_fanout": trie.fanout,
            "batches": {},
        }
        for batch in args.batches:
            prompt, mask_pos = make_prompt(batch, special)
            prompt = jax.tree.map(jnp.asarray, prompt)
            run = lambda: jax.block_until_ready(
                beam_search(
                    graphdef,
                    state,
                    prompt,
                    mask_pos,
                    trie,
                    jnp.zeros(batch, jnp.int32),
                    jnp.full((batch, 1), -1, jnp.int32),
                    beam=args.beam,
                    top_k=args.top_k,
                    eop=special.eop,
                    sop=special.sop,
                )
            )
            compile_s = timed(run, 1)
            seconds = timed(run, args.repeats)
            row = {
                "ms_per_user": round(1000 * seconds / batch, 3),
                "first_call_s": round(compile_s, 2),
            }
            if batch in args.reference_batches:
                root = dict_trie(pool)
                decoder = HostTrieDecoder(model, batch, args.beam, max_steps=5)
                host = lambda: decoder(prompt, np.asarray(mask_pos), root, args.top_k, special)
                timed(host, 1)  # compile its jitted pieces
                host_s = timed(host, max(1, args.repeats - 1))
                row["host_trie_ms_per_user"] = round(1000 * host_s / batch, 3)
                row["speedup_vs_host_trie"] = round(host_s / seconds, 2)
            entry["batches"][str(batch)] = row
            print(json.dumps({"catalog": n, "batch": batch, **row}), flush=True)
        result["catalogs"][str(n)] = entry
    sizes = [str(n) for n in args.catalogs]
    if len(sizes) > 1:
        result["growth_smallest_to_largest"] = {
            b: round(
                result["catalogs"][sizes[-1]]["batches"][b]["ms_per_user"]
                / result["catalogs"][sizes[0]]["batches"][b]["ms_per_user"],
                3,
            )
            for b in map(str, args.batches)
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
