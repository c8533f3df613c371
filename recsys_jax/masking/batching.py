"""Static shapes: sampled examples -> fixed [batch, seq_len] arrays, padded or packed.

One compiled train step serves every batch because every batch has the same shape. Packing
puts several examples in a row; `segment_ids` (1, 2, ... per row, 0 = padding) keep them
apart in attention, and each example keeps its own positions (they restart at 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recsys_jax.example import SpecialIds
from recsys_jax.masking.layout import FIELDS, empty_fields, lay_out
from recsys_jax.masking.sampled import SampledExample
from recsys_jax.masking.spans import concat_ranges

# What the model reads (a prompt to decode from has these too) and what the loss adds.
MODEL_INPUTS = ("tokens", "positions", "block_positions", "segment_ids", "part_a")
BATCH_KEYS = MODEL_INPUTS + ("targets", "loss_mask")


def empty_batch(rows: int, seq_len: int, special: SpecialIds) -> dict[str, np.ndarray]:
    """All padding: pad tokens and targets, segment 0, no loss."""
    batch = empty_fields((rows, seq_len), special)
    batch["segment_ids"] = np.zeros((rows, seq_len), dtype=np.int32)
    return {k: batch[k] for k in BATCH_KEYS}


def _check_fits(length: int, seq_len: int, index: int):
    if length > seq_len:
        raise ValueError(
            f"masked example {index} has {length} tokens > seq_len "
            f"{seq_len}; raise seq_len or lower the masking max_length"
        )


def _place(batch, examples, rows, offsets, segments, special: SpecialIds):
    """Lays every example out at (row, offset) with its segment id, in one pass."""
    seq_len = batch["tokens"].shape[1]
    dest = np.asarray(rows, np.int64) * seq_len + np.asarray(offsets, np.int64)
    lay_out(examples, dest, {k: batch[k].reshape(-1) for k in FIELDS}, special)
    lengths = np.fromiter((x.length for x in examples), np.int64, len(examples))
    at, _ = concat_ranges(dest, lengths)
    batch["segment_ids"].reshape(-1)[at] = np.repeat(np.asarray(segments, np.int64), lengths)


def pad_batch(
    examples: Sequence[SampledExample],
    seq_len: int,
    special: SpecialIds,
    batch_size: int | None = None,
) -> dict[str, np.ndarray]:
    """One example per row, padded to seq_len; extra all-padding rows up to batch_size."""
    rows = len(examples) if batch_size is None else batch_size
    if len(examples) > rows:
        raise ValueError(f"{len(examples)} examples do not fit batch_size {rows}")
    for row, example in enumerate(examples):
        _check_fits(example.length, seq_len, row)
    batch = empty_batch(rows, seq_len, special)
    count = len(examples)
    _place(batch, examples, np.arange(count), np.zeros(count), np.ones(count), special)
    return batch


def pack_batch(
    examples: Sequence[SampledExample], batch_size: int, seq_len: int, special: SpecialIds
) -> tuple[dict[str, np.ndarray], list[SampledExample]]:
    """Greedy first-fit packing: each example goes in the first row with room for it.

    Returns the batch and the examples that did not fit (in input order) for the next batch.
    """
    used = [0] * batch_size
    segments = [0] * batch_size
    placed, rows, offsets, segment_ids, leftover = [], [], [], [], []
    for i, example in enumerate(examples):
        length = example.length
        _check_fits(length, seq_len, i)
        row = next((r for r in range(batch_size) if used[r] + length <= seq_len), None)
        if row is None:
            leftover.append(example)
            continue
        segments[row] += 1
        placed.append(example)
        rows.append(row)
        offsets.append(used[row])
        segment_ids.append(segments[row])
        used[row] += length
    batch = empty_batch(batch_size, seq_len, special)
    _place(batch, placed, rows, offsets, segment_ids, special)
    return batch, leftover


def attention_allowed(segment_ids: np.ndarray, part_a: np.ndarray) -> np.ndarray:
    """Reference prefix-LM rule for tests (the model owns the real one): query i sees key j iff
    both are in the same real segment and j is in Part A or j <= i. Shapes [..., L] -> [..., L, L].
    """
    seg_q, seg_k = segment_ids[..., :, None], segment_ids[..., None, :]
    length = segment_ids.shape[-1]
    causal = np.tril(np.ones((length, length), dtype=bool))
    return (seg_q == seg_k) & (seg_k != 0) & ((part_a[..., None, :] == 1) | causal)
