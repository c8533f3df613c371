"""Static shapes: masked examples -> fixed [batch, seq_len] arrays, padded or packed.

One compiled train step serves every batch because every batch has the same shape. Packing
puts several examples in a row; `segment_ids` (1, 2, ... per row, 0 = padding) keep them
apart in attention, and each example keeps its own positions (they restart at 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recsys_jax.example import SpecialIds

# What the model reads (a prompt to decode from has these too) and what the loss adds.
MODEL_INPUTS = ("tokens", "positions", "block_positions", "segment_ids", "part_a")
BATCH_KEYS = MODEL_INPUTS + ("targets", "loss_mask")


def empty_batch(rows: int, seq_len: int, special: SpecialIds) -> dict[str, np.ndarray]:
    """All padding: pad tokens and targets, segment 0, no loss."""
    batch = {k: np.zeros((rows, seq_len), dtype=np.int32) for k in BATCH_KEYS}
    batch["tokens"][:] = special.pad
    batch["targets"][:] = special.pad
    batch["loss_mask"] = np.zeros((rows, seq_len), dtype=np.float32)
    return batch


def _put(batch, row: int, offset: int, example: dict, segment: int) -> int:
    """Writes one masked example into `row` at `offset`; returns the offset after it."""
    end = offset + len(example["tokens"])
    for k in BATCH_KEYS:
        if k == "segment_ids":
            batch[k][row, offset:end] = segment
        else:
            batch[k][row, offset:end] = example[k]
    return end


def _check_fits(example: dict, seq_len: int, index: int):
    if len(example["tokens"]) > seq_len:
        raise ValueError(
            f"masked example {index} has {len(example['tokens'])} tokens > seq_len "
            f"{seq_len}; raise seq_len or lower the masking max_length"
        )


def pad_batch(
    examples: Sequence[dict], seq_len: int, special: SpecialIds, batch_size: int | None = None
) -> dict[str, np.ndarray]:
    """One example per row, padded to seq_len; extra all-padding rows up to batch_size."""
    rows = len(examples) if batch_size is None else batch_size
    if len(examples) > rows:
        raise ValueError(f"{len(examples)} examples do not fit batch_size {rows}")
    batch = empty_batch(rows, seq_len, special)
    for row, example in enumerate(examples):
        _check_fits(example, seq_len, row)
        _put(batch, row, 0, example, segment=1)
    return batch


def pack_batch(
    examples: Sequence[dict], batch_size: int, seq_len: int, special: SpecialIds
) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Greedy first-fit packing: each example goes in the first row with room for it.

    Returns the batch and the examples that did not fit (in input order) for the next batch.
    """
    batch = empty_batch(batch_size, seq_len, special)
    used = [0] * batch_size
    segments = [0] * batch_size
    leftover = []
    for i, example in enumerate(examples):
        _check_fits(example, seq_len, i)
        length = len(example["tokens"])
        row = next((r for r in range(batch_size) if used[r] + length <= seq_len), None)
        if row is None:
            leftover.append(example)
            continue
        segments[row] += 1
        used[row] = _put(batch, row, used[row], example, segments[row])
    return batch, leftover


def attention_allowed(segment_ids: np.ndarray, part_a: np.ndarray) -> np.ndarray:
    """Reference prefix-LM rule for tests (the model owns the real one): query i sees key j iff
    both are in the same real segment and j is in Part A or j <= i. Shapes [..., L] -> [..., L, L].
    """
    seg_q, seg_k = segment_ids[..., :, None], segment_ids[..., None, :]
    length = segment_ids.shape[-1]
    causal = np.tril(np.ones((length, length), dtype=bool))
    return (seg_q == seg_k) & (seg_k != 0) & ((part_a[..., None, :] == 1) | causal)
