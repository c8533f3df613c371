"""Prompt stacking: bucketed widths hold every prompt, stay few, and never pass the cap."""

import numpy as np
import pytest

from recsys_jax.decoding.inputs import stack_prompts
from recsys_jax.example import SpecialIds

SP = SpecialIds(pad=34, mask=35, smask=36, gmask=37, sop=38, eop=39)


def _prompt(n):
    return {
        "tokens": np.arange(2, n + 2),
        "positions": np.arange(n),
        "block_positions": np.zeros(n, int),
        "part_a": np.ones(n, int),
    }


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
    out = stack_prompts([_prompt(n) for n in lengths], cap, SP, bucket=True)
    assert out["tokens"].shape == (len(lengths), width)
    for row, n in enumerate(lengths):  # the prompt, then segment-0 padding
        assert out["segment_ids"][row].tolist() == [1] * n + [0] * (width - n)
        assert out["tokens"][row, :n].tolist() == list(range(2, n + 2))
        assert (out["tokens"][row, n:] == SP.pad).all()


def test_unbucketed_width_is_the_cap_and_overlong_prompts_fail():
    assert stack_prompts([_prompt(5)], 40, SP)["tokens"].shape == (1, 40)
    with pytest.raises(ValueError, match="exceeds the decoding length 30"):
        stack_prompts([_prompt(31)], 30, SP, bucket=True)
