"""SASRec's training data: next-item windows of the users' training sequences, grouped into
length buckets so the jitted step compiles once per bucket, and right-padded history tokens for
scoring. Token i + 1 is item i; 0 is padding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from recsys_jax.baselines.sasrec_model import SASRecConfig


def training_windows(sequences: Sequence[np.ndarray], max_len: int) -> list[np.ndarray]:
    """Cut each sequence, from its end, into windows of at most max_len + 1 items that overlap
    by one item, so each of the n - 1 next-item targets is in exactly one window."""
    windows = []
    for seq in sequences:
        seq = np.asarray(seq, np.int64)
        end = len(seq)  # exclusive end of the current window
        while end >= 2:
            start = max(0, end - (max_len + 1))
            windows.append(seq[start:end])
            end = start + 1
    return windows


def bucket_lengths(max_len: int, buckets: Sequence[int]) -> tuple[int, ...]:
    return tuple(sorted({b for b in buckets if 0 < b < max_len} | {max_len}))


def make_batches(
    windows: list[np.ndarray],
    cfg: SASRecConfig,
    batch_size: int,
    buckets: Sequence[int],
    rng: np.random.Generator,
) -> Iterator[dict]:
    """Shuffled batches of windows grouped by length bucket; each batch is
    {"inputs": int32 [batch_size, bucket] tokens (0 = padding, item i -> i + 1), "targets":
    int32 internal item ids of the next item (0 where there is none), "mask": float32, 1 at
    real targets}. Short batches are padded with empty rows so shapes stay static."""
    sizes = bucket_lengths(cfg.max_len, buckets)
    by_bucket: dict[int, list[int]] = {b: [] for b in sizes}
    for i, w in enumerate(windows):
        n_inputs = len(w) - 1
        by_bucket[next(b for b in sizes if n_inputs <= b)].append(i)
    plan = []
    for length, members in by_bucket.items():
        members = rng.permutation(np.asarray(members, np.int64))
        plan += [(length, members[s : s + batch_size]) for s in range(0, len(members), batch_size)]
    for j in rng.permutation(len(plan)):
        length, members = plan[j]
        inputs = np.zeros((batch_size, length), np.int32)
        targets = np.zeros((batch_size, length), np.int32)
        mask = np.zeros((batch_size, length), np.float32)
        for row, i in enumerate(members):
            w = windows[i]
            n = len(w) - 1
            inputs[row, :n] = w[:-1] + 1
            targets[row, :n] = w[1:]
            mask[row, :n] = 1.0
        yield {"inputs": inputs, "targets": targets, "mask": mask}


def num_batches(
    windows: list[np.ndarray], max_len: int, batch_size: int, buckets: Sequence[int]
) -> int:
    sizes = bucket_lengths(max_len, buckets)
    counts = {b: 0 for b in sizes}
    for w in windows:
        counts[next(b for b in sizes if len(w) - 1 <= b)] += 1
    return sum(-(-c // batch_size) for c in counts.values())


def history_tokens(
    histories: Sequence[np.ndarray], max_len: int, rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The last max_len items of each history as right-padded tokens [rows, max_len] and the
    index of each row's newest item (rows beyond len(histories) are empty)."""
    rows = len(histories) if rows is None else rows
    tokens = np.zeros((rows, max_len), np.int32)
    last = np.zeros((rows,), np.int32)
    for r, h in enumerate(histories):
        h = np.asarray(h, np.int64)[-max_len:] if max_len else np.zeros(0, np.int64)
        tokens[r, : len(h)] = h + 1
        last[r] = max(len(h) - 1, 0)
    return tokens, last
