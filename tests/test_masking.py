"""RecSysLLM masking: hand-worked layouts (docs/design.md, RecSysLLM's three changes) and property
tests."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_jax.example import SpecialIds, TokenizedExample
from recsys_jax.masking import (
    BATCH_KEYS,
    FIELDS,
    MaskingConfig,
    attention_allowed,
    lay_out_one,
    mask_example,
    mask_spans,
    pack_batch,
    pad_batch,
    sample_example,
    sample_spans,
    target_mask_kind,
)
from recsys_jax.masking.sampled import sampled_example
from recsys_jax.masking.spans import snap_to_entities, splits_entity

SP = SpecialIds(pad=0, mask=1, smask=2, gmask=3, sop=4, eop=5)
MASKS = {SP.mask, SP.smask, SP.gmask}
FIRST_ID = 10  # text ids start above the special ids
CFG = MaskingConfig()
CFG_MASK = MaskingConfig(kind_probs=(1, 0, 0))  # free text: [MASK] spans only
PROPS = settings(max_examples=60, deadline=None)


def rng(seed):
    return np.random.default_rng(seed)


def paper_example():
    # x1..x7 = 11..17; e1 = x1 x2 x3, and x6 x7 is an entity; x4, x5 are free.
    return TokenizedExample(ids=np.arange(11, 18), entity_spans=[(0, 3), (5, 7)])


# --------------------------------------------------------------------------- hand-worked
def test_paper_example_layout():
    out = mask_spans(paper_example(), [(0, 3), (4, 5)], ["mask", "mask"], SP, CFG)
    M, S, E, P = SP.mask, SP.sop, SP.eop, SP.pad
    np.testing.assert_array_equal(out["tokens"], [M, 14, M, 16, 17, S, 11, 12, 13, S, 15])
    np.testing.assert_array_equal(out["positions"], [0, 1, 2, 3, 4, 0, 0, 0, 0, 2, 2])
    np.testing.assert_array_equal(out["block_positions"], [0, 0, 0, 1, 2, 1, 2, 3, 4, 1, 2])
    np.testing.assert_array_equal(out["part_a"], [1] * 5 + [0] * 6)
    np.testing.assert_array_equal(out["targets"], [P] * 5 + [11, 12, 13, E, 15, E])
    np.testing.assert_array_equal(out["loss_mask"], [0] * 5 + [1] * 6)
    assert out["loss_mask"].dtype == np.float32
    assert all(out[k].dtype == np.int32 for k in FIELDS if k != "loss_mask")


def test_gmask_over_two_items_restarts_intra_ids_at_the_second():
    # "A1 A2 , B1 B2" with entities A, B; one [gMASK] span over all of it.
    ex = TokenizedExample(ids=np.array([21, 22, 9, 23, 24]), entity_spans=[(0, 2), (3, 5)])
    out = mask_spans(ex, [(0, 5)], ["gmask"], SP, CFG)
    np.testing.assert_array_equal(out["tokens"], [SP.gmask, SP.sop, 21, 22, 9, 23, 24])
    np.testing.assert_array_equal(out["block_positions"], [0, 1, 2, 3, 4, 1, 2])


def test_causal_item_sequence_is_one_part_b_span_with_a_loss_at_every_item():
    # Three one-token items 21 22 23 of an open-ended sequence (the item_sequence family).
    ex = TokenizedExample(
        ids=np.array([21, 22, 23]),
        entity_spans=[(0, 1), (1, 2), (2, 3)],
        target_spans=[(0, 3)],
        open_end=True,
    )
    out = mask_example(ex, SP, MaskingConfig(entity_positions=False), rng(0))
    np.testing.assert_array_equal(out["tokens"], [SP.mask, SP.sop, 21, 22, 23])
    np.testing.assert_array_equal(out["positions"], [0, 0, 0, 0, 0])
    # GLM positions count along the span: SASRec's absolute positions.
    np.testing.assert_array_equal(out["block_positions"], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(out["targets"][1:], [21, 22, 23, SP.eop])
    # Every item is a target; the cut end of the sequence teaches no <eop>.
    np.testing.assert_array_equal(out["loss_mask"], [0, 1, 1, 1, 0])
    # RecSysLLM's dynamic positions restart at every item instead.
    out = mask_example(ex, SP, CFG, rng(0))
    np.testing.assert_array_equal(out["block_positions"], [0, 1, 2, 1, 1])


def test_glm_positions_count_along_a_multi_entity_span():
    ex = TokenizedExample(ids=np.array([21, 22, 9, 23, 24]), entity_spans=[(0, 2), (3, 5)])
    out = mask_spans(ex, [(0, 5)], ["gmask"], SP, MaskingConfig(entity_positions=False))
    np.testing.assert_array_equal(out["block_positions"], [0, 1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(out["loss_mask"], [0] + [1] * 6)  # closed text: <eop> kept


def test_paper_example_attention():
    out = mask_spans(paper_example(), [(0, 3), (4, 5)], ["mask", "mask"], SP, CFG)
    allowed = attention_allowed(np.ones(11, np.int32), out["part_a"])
    assert allowed[:5, :5].all() and not allowed[:5, 5:].any()  # Part A: bidirectional, no B
    assert allowed[5:, :5].all()  # Part B sees all of Part A
    np.testing.assert_array_equal(allowed[5:, 5:], np.tril(np.ones((6, 6), bool)))


def test_part_b_follows_given_order():
    out = mask_spans(paper_example(), [(4, 5), (0, 3)], ["mask", "mask"], SP, CFG)
    np.testing.assert_array_equal(out["tokens"][5:], [SP.sop, 15, SP.sop, 11, 12, 13])
    np.testing.assert_array_equal(out["positions"][5:], [2, 2, 0, 0, 0, 0])
    np.testing.assert_array_equal(out["block_positions"][5:], [1, 2, 1, 2, 3, 4])


def test_glm_positions_ablation():
    cfg = MaskingConfig(entity_positions=False)
    out = mask_spans(paper_example(), [(0, 3), (4, 5)], ["mask", "mask"], SP, cfg)
    np.testing.assert_array_equal(out["block_positions"], [0, 0, 0, 0, 0, 1, 2, 3, 4, 1, 2])


def test_span_splitting_an_entity_is_rejected_unless_ablation():
    with pytest.raises(ValueError, match="splits entity"):
        mask_spans(paper_example(), [(1, 4)], ["mask"], SP, CFG)
    out = mask_spans(paper_example(), [(1, 4)], ["mask"], SP, MaskingConfig(entity_aware=False))
    # The partly hidden entity e1 reads as free tokens; x6 x7 keeps its intra ids.
    np.testing.assert_array_equal(out["tokens"][:5], [11, SP.mask, 15, 16, 17])
    np.testing.assert_array_equal(out["block_positions"][:5], [0, 0, 0, 1, 2])


def test_mask_kinds_use_their_token():
    out = mask_spans(paper_example(), [(0, 3), (3, 5), (5, 7)], ["mask", "smask", "gmask"], SP, CFG)
    np.testing.assert_array_equal(out["tokens"][:3], [SP.mask, SP.smask, SP.gmask])


def test_too_long_is_a_clear_error():
    with pytest.raises(ValueError, match="max_length 10.*shorten the history"):
        mask_spans(
            paper_example(), [(0, 3), (4, 5)], ["mask", "mask"], SP, MaskingConfig(max_length=10)
        )


def test_bad_input_errors():
    with pytest.raises(ValueError, match="overlap"):
        mask_spans(paper_example(), [(0, 3), (2, 5)], ["mask", "mask"], SP, CFG)
    with pytest.raises(ValueError, match="no token ids"):
        mask_example(TokenizedExample(ids=np.array([], np.int32)), SP, CFG, rng(0))
    with pytest.raises(ValueError, match="kind_probs"):
        MaskingConfig(kind_probs=(0.5, 0.2, 0.2))


def test_sequential_task_masks_the_next_item():
    # "bought A B then ?" : history items (1,3), (3,5) and target item (6,8).
    ex = TokenizedExample(
        ids=np.arange(10, 18),
        entity_spans=[(1, 3), (3, 5), (6, 8)],
        target_spans=[(6, 8)],
        task="2-3",
    )
    out = mask_example(ex, SP, CFG, rng(0))
    np.testing.assert_array_equal(out["tokens"], [10, 11, 12, 13, 14, 15, SP.mask, SP.sop, 16, 17])
    np.testing.assert_array_equal(out["block_positions"], [0, 1, 2, 1, 2, 0, 0, 1, 2, 3])
    np.testing.assert_array_equal(out["positions"][-3:], [6, 6, 6])


def test_free_text_answer_at_the_end_uses_gmask():
    ex = TokenizedExample(ids=np.arange(10, 20), entity_spans=[(2, 4)], target_spans=[(5, 10)])
    assert target_mask_kind(ex, (5, 10)) == "gmask"
    assert target_mask_kind(ex, (2, 4)) == "mask"
    out = mask_example(ex, SP, CFG, rng(0))
    assert out["tokens"][5] == SP.gmask


def test_extra_entity_masks():
    ex = TokenizedExample(
        ids=np.arange(10, 20), entity_spans=[(0, 2), (2, 4), (8, 10)], target_spans=[(8, 10)]
    )
    spans, _ = sample_spans(ex, MaskingConfig(extra_entity_mask_prob=1.0), rng(0))
    assert spans == [(0, 2), (2, 4), (8, 10)]
    spans, _ = sample_spans(ex, MaskingConfig(extra_entity_mask_prob=0.0), rng(0))
    assert spans == [(8, 10)]


def test_extra_entity_masks_over_a_long_history_never_overflow_max_length():
    # Infill over 50 one-token items + the target (p = 0.5): a rare draw of 39 extra masks needed
    # 51 + 2 x 39 = 129 > 128 tokens and stopped a training run. Extra masks now keep a random
    # subset that fits; the target is always masked.
    n = 51
    ex = TokenizedExample(
        ids=np.arange(10, 10 + n),
        entity_spans=[(i, i + 1) for i in range(n)],
        target_spans=[(n - 1, n)],
    )
    cfg = MaskingConfig(extra_entity_mask_prob=1.0, max_length=128)
    for seed in range(5):
        spans, _ = sample_spans(ex, cfg, rng(seed))
        assert (n - 1, n) in spans
        assert n + 2 * len(spans) <= 128
        assert len(spans) == (128 - n) // 2  # as many as fit
        assert len(mask_example(ex, SP, cfg, rng(seed))["tokens"]) <= 128
    # A draw that fits is unchanged by the cap (the same spans as with room to spare).
    fits = dataclasses.replace(cfg, extra_entity_mask_prob=0.3)
    roomy = dataclasses.replace(fits, max_length=512)
    assert sample_spans(ex, fits, rng(1)) == sample_spans(ex, roomy, rng(1))


def test_free_text_near_max_length_masks_fewer_spans_instead_of_overflowing():
    # Beauty title index, 2026-11-27: a 242-token "bought A, B, ..." text drew 10 [MASK] spans
    # (mostly the free ", " tokens) and needed 262 > 256 tokens. Every sample must now fit.
    ids = np.arange(10, 252)  # 242 tokens: 16-token titles joined by one free token
    entities = [(i, i + 16) for i in range(1, 242 - 16, 17)]
    ex = TokenizedExample(ids=ids, entity_spans=entities, sentence_spans=[(0, 242)])
    cfg = MaskingConfig(max_length=256, kind_probs=(1, 0, 0), poisson_lambda=1.0)
    counts = []
    for seed in range(200):
        out = mask_example(ex, SP, cfg, rng(seed))
        assert len(out["tokens"]) <= 256
        counts.append(int(np.isin(out["tokens"], list(MASKS)).sum()))
    assert max(counts) == 7  # (256 - 242) // 2: the cap binds, and is the only limit hit
    # Room to spare: the cap leaves the mask ratio alone.
    roomy = dataclasses.replace(cfg, max_length=1024)
    spans = [len(sample_spans(ex, roomy, rng(seed))[0]) for seed in range(200)]
    assert max(spans) > 7


def test_smask_without_sentences_falls_back_to_mask():
    ex = TokenizedExample(ids=np.arange(10, 40))
    _, kinds = sample_spans(ex, MaskingConfig(kind_probs=(0, 1, 0)), rng(0))
    assert set(kinds) == {"mask"}


# --------------------------------------------------------------------------- properties
@st.composite
def examples(draw, task=None):
    """Random text: free runs and entities interleaved, sentences cut anywhere."""
    pieces = draw(st.lists(st.tuples(st.booleans(), st.integers(1, 5)), min_size=1, max_size=12))
    entities, n = [], 0
    for is_entity, length in pieces:
        if is_entity:
            entities.append((n, n + length))
        n += length
    cuts = sorted(set(draw(st.lists(st.integers(1, n), max_size=4))) | {n}) if n > 1 else [n]
    sentences = list(zip([0] + cuts[:-1], cuts))
    is_task = draw(st.booleans()) if task is None else task
    targets = []
    if is_task and entities:
        targets = draw(st.lists(st.sampled_from(entities), min_size=1, max_size=3, unique=True))
    elif is_task:
        targets = [(draw(st.integers(0, n - 1)), n)]  # a free-text answer ending the text
    ids = np.asarray(draw(st.lists(st.integers(FIRST_ID, 99), min_size=n, max_size=n)))
    return TokenizedExample(
        ids=ids,
        entity_spans=entities,
        target_spans=sorted(targets),
        sentence_spans=sentences,
        task="t" if targets else "",
    )


configs = st.builds(
    MaskingConfig,
    kind_probs=st.sampled_from([(1, 0, 0), (0, 1, 0), (0, 0, 1), (0.6, 0.2, 0.2)]),
    extra_entity_mask_prob=st.sampled_from([0.0, 0.5]),
    keep_span_order=st.booleans(),
    entity_positions=st.booleans(),
    entity_aware=st.booleans(),
)


def part_b_spans(out):
    """Part B as a list of (mask position, content tokens), in Part B order."""
    starts = np.flatnonzero((out["part_a"] == 0) & (out["tokens"] == SP.sop))
    ends = list(starts[1:]) + [len(out["tokens"])]
    return [(int(out["positions"][s]), out["tokens"][s + 1 : e]) for s, e in zip(starts, ends)]


def reconstruct(out):
    """Fill each Part A mask with its Part B span content."""
    content = dict(part_b_spans(out))
    text = []
    for pos, tok in enumerate(out["tokens"][out["part_a"] == 1]):
        text.extend(content[pos] if pos in content else [tok])
    return np.asarray(text)


@PROPS
@given(examples(), st.integers(0, 2**31), configs)
def test_reconstruction_and_layout(ex, seed, cfg):
    out = mask_example(ex, SP, cfg, rng(seed))
    np.testing.assert_array_equal(reconstruct(out), ex.ids)
    length = len(out["tokens"])
    assert all(out[k].shape == (length,) for k in FIELDS)
    spans = part_b_spans(out)
    assert length == len(ex.ids) + 2 * len(spans)
    a = out["part_a"] == 1
    np.testing.assert_array_equal(out["loss_mask"], (~a).astype(np.float32))
    np.testing.assert_array_equal(out["positions"][a], np.arange(a.sum()))
    assert a[: a.sum()].all()  # Part A first, then Part B
    mask_positions = np.flatnonzero(np.isin(out["tokens"][a], list(MASKS)))
    assert sorted(p for p, _ in spans) == mask_positions.tolist()  # one mask per span
    # Part B: block ids count 1.. from <sop>, restarting at 1 where a later whole entity
    # begins; targets are the tokens shifted left then <eop>.
    b_tok, b_tgt = out["tokens"][~a], out["targets"][~a]
    b_blk = out["block_positions"][~a]
    offset = 0
    for _, content in spans:
        k = len(content)
        blk = b_blk[offset : offset + k + 1]
        assert blk[0] == 1 and np.all((blk[1:] == blk[:-1] + 1) | (blk[1:] == 1))
        assert np.count_nonzero(blk[1:] == 1) <= len(ex.entity_spans)
        if not ex.entity_spans:
            np.testing.assert_array_equal(blk, np.arange(1, k + 2))
        np.testing.assert_array_equal(b_tgt[offset : offset + k + 1], list(content) + [SP.eop])
        assert b_tok[offset] == SP.sop
        offset += k + 1
    if cfg.keep_span_order:
        assert [p for p, _ in spans] == sorted(p for p, _ in spans)
    if not cfg.entity_positions:
        assert not out["block_positions"][a].any()


def test_part_b_intra_ids_restart_at_each_later_entity():
    from recsys_jax.masking.layout import part_b_intra_ids

    # <sop> A A , B B B  (entities start at 0 and 3)
    np.testing.assert_array_equal(part_b_intra_ids(6, [0, 3]), [1, 2, 3, 4, 1, 2, 3])
    np.testing.assert_array_equal(part_b_intra_ids(3, [0]), [1, 2, 3, 4])
    np.testing.assert_array_equal(part_b_intra_ids(2, []), [1, 2, 3])


@PROPS
@given(examples(), st.integers(0, 2**31), configs)
def test_no_span_splits_an_entity(ex, seed, cfg):
    cfg = dataclasses.replace(cfg, entity_aware=True)
    spans, kinds = sample_spans(ex, cfg, rng(seed))
    assert spans and len(spans) == len(kinds)
    assert all(splits_entity(s, ex.entity_spans) is None for s in spans)
    # ... so Part A numbers each entity 1..len when left whole, else shows one mask token.
    out = mask_example(ex, SP, dataclasses.replace(cfg, entity_positions=True), rng(seed))
    expected, i = [], 0
    while i < len(ex.ids):
        span = next((sp for sp in spans if sp[0] == i), None)
        ent = next((en for en in ex.entity_spans if en[0] == i), None)
        if span:
            expected.append(0)
            i = span[1]
        elif ent:
            expected.extend(range(1, ent[1] - ent[0] + 1))
            i = ent[1]
        else:
            expected.append(0)
            i += 1
    np.testing.assert_array_equal(out["block_positions"][out["part_a"] == 1], expected)


@PROPS
@given(examples(task=True), st.integers(0, 2**31), configs)
def test_every_target_is_masked_as_one_span(ex, seed, cfg):
    spans, kinds = sample_spans(ex, cfg, rng(seed))
    for t in ex.target_spans:
        assert t in spans
        assert kinds[spans.index(t)] == target_mask_kind(ex, t)
    if cfg.extra_entity_mask_prob == 0 or not ex.entity_spans:
        assert spans == ex.target_spans


@PROPS
@given(examples(task=False), st.integers(0, 2**31), configs)
def test_free_text_objectives(ex, seed, cfg):
    spans, kinds = sample_spans(ex, cfg, rng(seed))
    n = len(ex.ids)
    assert len(set(kinds)) == 1
    if kinds[0] == "gmask":
        assert len(spans) == 1 and spans[0][1] == n
    if kinds[0] == "smask" and cfg.entity_aware:
        snapped = {snap_to_entities(s, ex.entity_spans) for s in ex.sentence_spans}
        assert set(spans) <= snapped
    if kinds[0] == "mask":  # the ~mask_ratio budget is met unless the text runs out
        hidden = sum(e - s for s, e in spans)
        assert hidden >= min(n, max(1, round(cfg.mask_ratio * n)))


@PROPS
@given(examples(), st.integers(0, 2**31), configs)
def test_seeded_determinism(ex, seed, cfg):
    a = mask_example(ex, SP, cfg, rng(seed))
    b = mask_example(ex, SP, cfg, rng(seed))
    for k in FIELDS:
        np.testing.assert_array_equal(a[k], b[k])


def test_gmask_covers_half_to_all_and_starts_at_a_boundary():
    # 10 items of 3 tokens: [gMASK] must start at an item start, hiding 50-100% of tokens.
    ex = TokenizedExample(ids=np.arange(10, 40), entity_spans=[(i, i + 3) for i in range(0, 30, 3)])
    cfg = MaskingConfig(kind_probs=(0, 0, 1))
    starts = set()
    for seed in range(40):
        (span,), _ = sample_spans(ex, cfg, rng(seed))
        assert span[1] == 30 and 15 <= 30 - span[0] <= 30 and span[0] % 3 == 0
        starts.add(span[0])
    assert len(starts) > 2


def test_mask_ratio_is_roughly_met():
    ex = TokenizedExample(
        ids=np.arange(10, 210), entity_spans=[(i, i + 2) for i in range(0, 200, 5)]
    )
    hidden = [sum(e - s for s, e in sample_spans(ex, CFG_MASK, rng(seed))[0]) for seed in range(20)]
    assert 30 <= np.mean(hidden) <= 40  # 15% of 200 plus at most one unit's overshoot


def test_shuffle_ablation_changes_order_only():
    ex = TokenizedExample(
        ids=np.arange(10, 40),
        entity_spans=[(i, i + 2) for i in range(0, 30, 3)],
        target_spans=[(i, i + 2) for i in range(0, 30, 3)],
    )
    kept = part_b_spans(mask_example(ex, SP, CFG, rng(0)))
    shuffled_orders = set()
    for seed in range(5):
        out = mask_example(ex, SP, MaskingConfig(keep_span_order=False), rng(seed))
        spans = part_b_spans(out)
        assert sorted(p for p, _ in spans) == [p for p, _ in kept]
        shuffled_orders.add(tuple(p for p, _ in spans))
    assert len(shuffled_orders) > 1


def test_entity_unaware_ablation_can_split_entities():
    ex = TokenizedExample(ids=np.arange(10, 40), entity_spans=[(i, i + 5) for i in range(0, 30, 5)])
    cfg = MaskingConfig(kind_probs=(1, 0, 0), entity_aware=False)
    split = [
        any(splits_entity(s, ex.entity_spans) for s in sample_spans(ex, cfg, rng(seed))[0])
        for seed in range(20)
    ]
    assert any(split)


# --------------------------------------------------------------------------- static shapes
masked_lists = st.lists(st.tuples(examples(), st.integers(0, 2**31)), min_size=1, max_size=6)


def sampled(pairs):
    return [sample_example(ex, SP, CFG, rng(seed)) for ex, seed in pairs]


@PROPS
@given(masked_lists)
def test_pad_batch(pairs):
    ins = sampled(pairs)
    outs = [mask_example(ex, SP, CFG, rng(seed)) for ex, seed in pairs]
    seq_len = max(len(o["tokens"]) for o in outs) + 3
    batch = pad_batch(ins, seq_len, SP, batch_size=len(outs) + 1)
    assert set(batch) == set(BATCH_KEYS)
    assert all(v.shape == (len(outs) + 1, seq_len) for v in batch.values())
    for row, o in enumerate(outs):
        length = len(o["tokens"])
        for k in FIELDS:
            np.testing.assert_array_equal(batch[k][row, :length], o[k])
        assert (batch["segment_ids"][row, :length] == 1).all()
        assert (batch["segment_ids"][row, length:] == 0).all()
        assert (batch["tokens"][row, length:] == SP.pad).all()
        assert not batch["loss_mask"][row, length:].any()
    assert not batch["segment_ids"][-1].any()


@PROPS
@given(masked_lists, st.integers(1, 3))
def test_pack_batch(pairs, batch_size):
    ins = sampled(pairs)
    outs = [mask_example(ex, SP, CFG, rng(seed)) for ex, seed in pairs]
    seq_len = max(len(o["tokens"]) for o in outs) + 5
    batch, leftover = pack_batch(ins, batch_size, seq_len, SP)
    assert all(v.shape == (batch_size, seq_len) for v in batch.values())
    placed = []
    for row in range(batch_size):
        seg = batch["segment_ids"][row]
        real = np.flatnonzero(seg)
        assert real.tolist() == list(range(len(real)))  # real tokens first, then padding
        ids = seg[real]
        assert (np.diff(ids) >= 0).all() and ids.tolist() == sorted(ids)  # contiguous segments
        for s in np.unique(ids):
            where = seg == s
            placed.append({k: batch[k][row][where] for k in FIELDS})
            assert batch["positions"][row][where][0] == 0  # positions restart per example
        allowed = attention_allowed(seg, batch["part_a"][row])
        assert not (allowed & (seg[:, None] != seg[None, :])).any()
    assert len(placed) + len(leftover) == len(outs)
    # Every example comes out exactly once, whole and laid out as on its own, either packed
    # or left over.
    leftover = [lay_out_one(x, SP) for x in leftover]
    key = lambda o: tuple(o[k].tobytes() for k in FIELDS)
    assert sorted(map(key, placed + leftover)) == sorted(map(key, outs))


def test_pack_is_greedy_first_fit():
    def ex(n):  # n tokens once masked: n - 2 ids, the first one hidden
        text = TokenizedExample(ids=np.arange(FIRST_ID, FIRST_ID + n - 2))
        return sampled_example(text, [(0, 1)], ["mask"], SP, CFG)

    batch, leftover = pack_batch([ex(6), ex(5), ex(4), ex(3), ex(6)], 2, 10, SP)
    np.testing.assert_array_equal(batch["segment_ids"][0], [1] * 6 + [2] * 4)
    np.testing.assert_array_equal(batch["segment_ids"][1], [1] * 5 + [2] * 3 + [0] * 2)
    np.testing.assert_array_equal(batch["positions"][0], [0, 1, 2, 3, 0, 0, 0, 1, 0, 0])
    assert [o.length for o in leftover] == [6]
    with pytest.raises(ValueError, match="seq_len"):
        pack_batch([ex(11)], 2, 10, SP)
    with pytest.raises(ValueError, match="seq_len"):
        pad_batch([ex(11)], 10, SP)
