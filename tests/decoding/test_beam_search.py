"""Beam search over the trie equals exhaustive scoring when the beam holds the catalog, every
result is a catalog (or candidate) item, and repeated calls do not recompile."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_jax.decoding import trie as trie_lib
from recsys_jax.decoding.beam_search import beam_search
from recsys_jax.decoding.inputs import answer_sample, causal_sample, decoder_inputs
from recsys_jax.decoding.scoring import pad_candidates, score_candidates
from recsys_jax.example import SpecialIds, TokenizedExample
from recsys_jax.masking import MaskingConfig, mask_spans
from recsys_jax.model import GLM, ModelConfig

V = 40
SP = SpecialIds(pad=34, mask=35, smask=36, gmask=37, sop=38, eop=39)
CFG = ModelConfig(
    vocab_size=V,
    num_layers=2,
    num_heads=2,
    hidden_size=32,
    max_positions=64,
    max_block_positions=64,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
)


@pytest.fixture(scope="module")
def model():
    m = GLM(CFG, rngs=nnx.Rngs(0))
    # Larger embeddings make the distribution peaky enough for ties to be impossible.
    emb = m.word_embeddings.embedding
    emb.set_value(emb.get_value() * 40)
    return nnx.split(m)


def _prompts(rng, batch, length=12):
    samples = []
    for _ in range(batch):
        n = int(rng.integers(4, length - 2))
        ids = rng.integers(2, 30, n)
        ex = TokenizedExample(ids=ids, entity_spans=[(0, 2)])
        samples.append(answer_sample(ex, SP, MaskingConfig()))
    # Bucketed as evaluation stacks them (width 16 here, not the cap): the reference scores
    # below use unpadded prompts, so padding that leaked into the search would show.
    inputs = decoder_inputs(samples, SP, 2 * length, bucket=True)
    return inputs.prompt, inputs.mask_pos


def _reference_scores(model, prompt, mask_pos, pool, penalty):
    """Independent path: one full forward pass (no cache) per (row, item)."""
    graphdef, state = model
    m = nnx.merge(graphdef, state)
    out = np.zeros((prompt["tokens"].shape[0], len(pool)))
    for b in range(prompt["tokens"].shape[0]):
        n = int(prompt["segment_ids"][b].sum())
        for i, seq in enumerate(pool):
            k = len(seq)
            toks = np.concatenate([prompt["tokens"][b, :n], [SP.sop], seq])[None]
            pos = np.concatenate([prompt["positions"][b, :n], [mask_pos[b]] * (k + 1)])[None]
            blk = np.concatenate([prompt["block_positions"][b, :n], np.arange(1, k + 2)])[None]
            seg = np.ones_like(toks)
            pa = np.concatenate([np.ones(n), np.zeros(k + 1)])[None].astype(np.int32)
            logits = m(
                jnp.asarray(toks),
                jnp.asarray(pos),
                jnp.asarray(blk),
                jnp.asarray(seg),
                jnp.asarray(pa),
            )
            logp = jax.nn.log_softmax(logits[0, n:], axis=-1)
            targets = list(seq) + [SP.eop]
            total = float(sum(logp[j, t] for j, t in enumerate(targets)))
            out[b, i] = total / (k + 1) ** penalty
    return out


def _pool(rng, n_items):
    pool = set()
    while len(pool) < n_items:
        pool.add(tuple(int(t) for t in rng.integers(2, 30, int(rng.integers(1, 4)))))
    return sorted(pool)


@pytest.mark.slow
@pytest.mark.parametrize("penalty", [0.0, 1.0])
def test_full_beam_equals_exhaustive_top_k(model, penalty):
    rng = np.random.default_rng(1)
    pool = _pool(rng, 10)
    trie = trie_lib.catalog_trie(pool, V).device_put()
    prompt, mask_pos = _prompts(rng, 3)
    items, scores = beam_search(
        model[0],
        model[1],
        prompt,
        mask_pos,
        trie,
        np.zeros(3, np.int32),
        np.full((3, 1), -1, np.int32),
        beam=len(pool),
        top_k=4,
        eop=SP.eop,
        sop=SP.sop,
        length_penalty=penalty,
    )
    ref = _reference_scores(model, prompt, mask_pos, pool, penalty)
    for b in range(3):
        order = np.argsort(-ref[b], kind="stable")[:4]
        assert list(np.asarray(items[b])) == list(order)
        np.testing.assert_allclose(np.asarray(scores[b]), ref[b, order], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_candidate_scoring_equals_reference(model):
    rng = np.random.default_rng(2)
    pool = _pool(rng, 8)
    prompt, mask_pos = _prompts(rng, 2)
    cands = np.array([[0, 3, 5, -1], [7, 1, 2, 4]])
    tokens, lens = pad_candidates(pool, cands)
    got = np.asarray(
        score_candidates(model[0], model[1], prompt, mask_pos, tokens, lens, sop=SP.sop, eop=SP.eop)
    )
    ref = _reference_scores(model, prompt, mask_pos, pool, 0.0)
    for b in range(2):
        for j, item in enumerate(cands[b]):
            if item < 0:
                assert got[b, j] == -np.inf
            else:
                assert got[b, j] == pytest.approx(ref[b, item], rel=1e-4, abs=1e-4)


@pytest.mark.slow
@settings(max_examples=8, deadline=None)
@given(st.integers(0, 10_000), st.booleans())
def test_results_are_always_catalog_or_candidate_items(model, seed, restricted):
    rng = np.random.default_rng(seed)
    pool = _pool(rng, int(rng.integers(3, 25)))
    batch = 2
    if restricted:
        cands = np.stack(
            [rng.choice(len(pool), size=min(3, len(pool)), replace=False) for _ in range(batch)]
        )
        trie, roots = trie_lib.candidate_tries(pool, cands, V), np.arange(batch, dtype=np.int32)
    else:
        trie, roots = trie_lib.catalog_trie(pool, V), np.zeros(batch, np.int32)
    exclude = np.full((batch, 2), -1, np.int32)
    exclude[0, 0] = 0
    prompt, mask_pos = _prompts(rng, batch)
    items, scores = beam_search(
        model[0],
        model[1],
        prompt,
        mask_pos,
        trie.device_put(),
        roots,
        exclude,
        beam=4,
        top_k=3,
        eop=SP.eop,
        sop=SP.sop,
    )
    items, scores = np.asarray(items), np.asarray(scores)
    for b in range(batch):
        got = [i for i in items[b] if i >= 0]
        allowed = set(cands[b].tolist()) if restricted else set(range(len(pool)))
        assert set(got) <= allowed and len(got) == len(set(got))  # real, distinct items
        assert len(got) == min(3, len(allowed - ({0} if b == 0 else set())))
        assert list(scores[b][: len(got)]) == sorted(scores[b][: len(got)], reverse=True)
    assert 0 not in items[0]  # excluded history item


@pytest.mark.slow
def test_repeated_calls_do_not_recompile(model):
    rng = np.random.default_rng(3)
    pool = _pool(rng, 12)
    trie = trie_lib.catalog_trie(pool, V).device_put()
    args = dict(beam=4, top_k=3, eop=SP.eop, sop=SP.sop)
    prompt, mask_pos = _prompts(rng, 2)
    beam_search(
        model[0],
        model[1],
        prompt,
        mask_pos,
        trie,
        np.zeros(2, np.int32),
        np.full((2, 1), -1, np.int32),
        **args,
    )
    before = beam_search._cache_size()
    for seed in range(3):
        prompt, mask_pos = _prompts(np.random.default_rng(seed + 10), 2)
        beam_search(
            model[0],
            model[1],
            prompt,
            mask_pos,
            trie,
            np.zeros(2, np.int32),
            np.full((2, 1), -1, np.int32),
            **args,
        )
    assert beam_search._cache_size() == before


@pytest.mark.slow
def test_candidate_tries_have_fixed_shapes_and_search_like_unpadded_ones(model):
    """Padding a candidate trie (one compile per evaluation, not per batch) changes nothing
    the search returns."""
    rng = np.random.default_rng(3)
    pool = _pool(rng, 30)
    batch, roots = 2, np.arange(2, dtype=np.int32)
    exclude = np.full((batch, 1), -1, np.int32)
    prompt, mask_pos = _prompts(rng, batch)
    shapes = set()
    for _ in range(2):
        cands = np.stack([rng.choice(len(pool), size=5, replace=False) for _ in range(batch)])
        padded = trie_lib.candidate_tries(pool, cands, V)
        plain = trie_lib.build_trie(
            [[pool[i] for i in row] for row in cands], [list(row) for row in cands], V
        )
        shapes.add(tuple(a.shape for a in padded.arrays().values()) + (padded.fanout,))
        got = [
            beam_search(
                model[0],
                model[1],
                prompt,
                mask_pos,
                t.device_put(),
                roots,
                exclude,
                beam=4,
                top_k=3,
                eop=SP.eop,
                sop=SP.sop,
            )
            for t in (padded, plain)
        ]
        np.testing.assert_array_equal(np.asarray(got[0][0]), np.asarray(got[1][0]))
        np.testing.assert_allclose(np.asarray(got[0][1]), np.asarray(got[1][1]), atol=1e-5)
    assert len(shapes) == 1


@pytest.mark.slow
@pytest.mark.parametrize("entity_positions", [False, True])
def test_continuing_a_causal_item_sequence_equals_the_full_forward_pass(model, entity_positions):
    """A causal item-sequence model is decoded by continuing the history's own Part B span:
    every returned score is the log-probability of the item's tokens after the history, as a
    plain forward pass over `[MASK] <sop> history item` computes it (no <eop> term), with the
    intra ids the training layout gives (GLM: counting on; dynamic: restarting per item)."""
    rng = np.random.default_rng(5)
    pool = _pool(rng, 9)
    masking = MaskingConfig(entity_positions=entity_positions)
    samples, refs = [], []
    m = nnx.merge(*model)
    for n_items in (2, 4):
        hist = [pool[int(i)] for i in rng.choice(len(pool), n_items, replace=False)]
        ids = np.concatenate(hist).astype(np.int32)
        bounds = np.cumsum([0] + [len(h) for h in hist])
        ex = TokenizedExample(ids=ids, entity_spans=list(zip(bounds[:-1], bounds[1:])))
        samples.append(causal_sample(ex, SP, masking))
        ref = []
        for seq in pool:  # full forward over the layout of history + this item
            full = TokenizedExample(
                ids=np.concatenate([ids, seq]).astype(np.int32),
                entity_spans=ex.entity_spans + [(len(ids), len(ids) + len(seq))],
            )
            out = mask_spans(full, [(0, len(full.ids))], ["mask"], SP, masking)
            args = [jnp.asarray(out[k])[None] for k in ("tokens", "positions", "block_positions")]
            logits = m(*args, jnp.ones_like(args[0]), jnp.asarray(out["part_a"])[None])
            logp = jax.nn.log_softmax(logits[0], axis=-1)
            first = len(out["tokens"]) - len(seq) - 1  # the position predicting seq[0]
            ref.append(float(sum(logp[first + j, t] for j, t in enumerate(seq))))
        refs.append(ref)
    inputs = decoder_inputs(
        samples, SP, 32, causal=True, dynamic_positions=entity_positions, bucket=True
    )
    stacked, mask_pos, start = inputs.prompt, inputs.mask_pos, inputs.start
    trie = trie_lib.catalog_trie(pool, V).device_put()
    items, scores = beam_search(
        model[0],
        model[1],
        stacked,
        mask_pos,
        trie,
        np.zeros(2, np.int32),
        np.full((2, 1), -1, np.int32),
        beam=len(pool),
        top_k=5,
        eop=SP.eop,
        sop=SP.sop,
        start=start,
    )
    for b, ref in enumerate(np.asarray(refs)):
        order = np.argsort(-ref, kind="stable")[:5]
        assert list(np.asarray(items[b])) == list(order)
        np.testing.assert_allclose(np.asarray(scores[b]), ref[order], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tokens_per_item", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_excluded_history_does_not_use_up_the_beam(model, tokens_per_item):
    """The user's history is excluded before it can take a beam: even when the model's
    favourite items are all in the history (more of them than the beam holds), the search
    returns the best k items outside it — not fewer (the search once lost those beams)."""
    rng = np.random.default_rng(7)
    pool = sorted({tuple(int(t) for t in rng.integers(2, 30, tokens_per_item)) for _ in range(40)})[
        :12
    ]
    trie = trie_lib.catalog_trie(pool, V).device_put()
    prompt, mask_pos = _prompts(rng, 2)
    ref = _reference_scores(model, prompt, mask_pos, pool, 0.0)
    exclude = np.stack([np.argsort(-ref[b], kind="stable")[:5] for b in range(2)]).astype(np.int32)
    items, scores = beam_search(
        model[0],
        model[1],
        prompt,
        mask_pos,
        trie,
        np.zeros(2, np.int32),
        exclude,
        beam=4,
        top_k=4,
        eop=SP.eop,
        sop=SP.sop,
    )
    for b in range(2):
        got = [int(i) for i in np.asarray(items[b])]
        assert len(got) == 4 and -1 not in got and not set(got) & set(exclude[b].tolist())
