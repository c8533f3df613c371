"""Decoder inputs: a batch of prompts laid out together equals each prompt's own training
layout, and bucketed widths hold every prompt, stay few, and never pass the cap."""

import numpy as np
import pytest

from recsys_jax.decoding.inputs import answer_sample, causal_sample, decoder_inputs
from recsys_jax.example import SpecialIds, TokenizedExample
from recsys_jax.masking import MaskingConfig, mask_spans

SP = SpecialIds(pad=34, mask=35, smask=36, gmask=37, sop=38, eop=39)
CFG = MaskingConfig(max_length=64)


def _answer(n):
    """An answer prompt of n tokens: n - 1 text ids, then the answer's mask."""
    return answer_sample(TokenizedExample(ids=np.arange(2, n + 1)), SP, CFG, answer_is_item=False)


@pytest.mark.parametrize(
    "lengths, cap, width",
    [
        ([3, 5], 160, 16),  # at least 16
        ([16, 2], 160, 16),  # exactly a power of two
        ([17, 9], 160, 32),  # the longest decides
        ([100], 160, 128),
        ([150], 160, 160),  # never past the cap
    ],
)
def test_bucketed_width(lengths, cap, width):
    out = decoder_inputs([_answer(n) for n in lengths], SP, cap, bucket=True).prompt
    assert out["tokens"].shape == (len(lengths), width)
    for row, n in enumerate(lengths):  # the prompt, then segment-0 padding
        assert out["segment_ids"][row].tolist() == [1] * n + [0] * (width - n)
        assert out["tokens"][row, : n - 1].tolist() == list(range(2, n + 1))
        assert out["tokens"][row, n - 1] == SP.gmask  # a free-text answer ends the text
        assert (out["tokens"][row, n:] == SP.pad).all()


def test_unbucketed_width_is_the_cap_and_overlong_prompts_fail():
    assert decoder_inputs([_answer(5)], SP, 40).prompt["tokens"].shape == (1, 40)
    with pytest.raises(ValueError, match="exceeds the decoding length 30"):
        decoder_inputs([_answer(31)], SP, 30, bucket=True)


def _items(rng, count):
    lengths = rng.integers(1, 4, count)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    ids = rng.integers(2, 30, bounds[-1]).astype(np.int32)
    return TokenizedExample(ids=ids, entity_spans=list(zip(bounds[:-1], bounds[1:])))


@pytest.mark.parametrize("entity_positions", [True, False])
def test_batch_rows_equal_each_prompts_own_layout(entity_positions):
    rng = np.random.default_rng(0)
    cfg = MaskingConfig(max_length=64, entity_positions=entity_positions)
    examples = [_items(rng, int(c)) for c in (1, 4, 2, 7)]
    keys = ("tokens", "positions", "block_positions", "part_a")

    answers = decoder_inputs([answer_sample(e, SP, cfg) for e in examples], SP, 64)
    for row, e in enumerate(examples):
        n = len(e.ids)  # Part A: the text, then the answer's mask
        full = TokenizedExample(
            ids=np.append(e.ids, SP.pad), entity_spans=e.entity_spans + [(n, n + 1)]
        )
        ref = mask_spans(full, [(n, n + 1)], ["mask"], SP, cfg)
        for k in keys:
            assert answers.prompt[k][row, : n + 1].tolist() == ref[k][: n + 1].tolist(), k
        assert answers.mask_pos[row] == ref["positions"][n]
    assert answers.start is None

    causal = decoder_inputs(
        [causal_sample(e, SP, cfg) for e in examples],
        SP,
        64,
        causal=True,
        dynamic_positions=entity_positions,
    )
    for row, e in enumerate(examples):
        ref = mask_spans(e, [(0, len(e.ids))], ["mask"], SP, cfg)  # [MASK] <sop> i1 .. in
        size = len(ref["tokens"]) - 1  # the last token is the first decode step
        for k in keys:
            assert causal.prompt[k][row, :size].tolist() == ref[k][:size].tolist(), k
        assert causal.prompt["segment_ids"][row].sum() == size
        token, intra, item_intra = (x[row] for x in causal.start)
        assert (token, intra) == (ref["tokens"][-1], ref["block_positions"][-1])
        assert item_intra == (1 if entity_positions else intra + 1)
        assert causal.mask_pos[row] == 0  # the span's mask opens Part A
