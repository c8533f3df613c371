"""SASRec's training windows and history tokens (`baselines/sasrec_data.py`)."""

import numpy as np

from recsys_jax.baselines import sasrec_data
from recsys_jax.baselines.sasrec_model import SASRecConfig


def test_training_windows_use_every_target_once():
    seq = np.arange(1, 13)  # 11 targets
    windows = sasrec_data.training_windows([seq, np.array([5])], max_len=4)
    targets = np.concatenate([w[1:] for w in windows])
    assert sorted(targets.tolist()) == list(range(2, 13))
    assert all(len(w) - 1 <= 4 for w in windows)
    assert windows[0].tolist() == [8, 9, 10, 11, 12]  # the newest window keeps full context


def test_history_tokens_keep_the_newest_items_right_padded():
    tokens, last = sasrec_data.history_tokens([np.array([4, 5, 6]), np.arange(20)], 5, rows=3)
    assert tokens.tolist() == [[5, 6, 7, 0, 0], [16, 17, 18, 19, 20], [0] * 5]
    assert last.tolist() == [2, 4, 0]


def test_batches_cover_every_window_once_with_static_shapes():
    rng = np.random.default_rng(0)
    seqs = [np.arange(1, n + 2) for n in (1, 3, 7, 12, 20, 2)]
    windows = sasrec_data.training_windows(seqs, max_len=16)
    cfg = SASRecConfig(num_items=30, max_len=16)
    batches = list(sasrec_data.make_batches(windows, cfg, 4, (4, 8), rng))
    assert len(batches) == sasrec_data.num_batches(windows, 16, 4, (4, 8))
    assert {b["inputs"].shape for b in batches} <= {(4, 4), (4, 8), (4, 16)}
    assert sum(int(b["mask"].sum()) for b in batches) == sum(len(w) - 1 for w in windows)
    for b in batches:  # inputs are token ids of the items before each target
        rows = b["mask"] > 0
        assert (b["inputs"][rows] > 0).all() and (b["targets"][rows] > 0).all()
