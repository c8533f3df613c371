"""Filtering and the evaluation splits of docs/design.md, leakage rules.

- k-core: drop users and items with fewer than k interactions, repeatedly, until stable.
- leave-one-out (sequential, direct): last item = test, second-to-last = validation, the rest
  train; the test history includes the validation item. A user's repeated item counts once,
  at its first occurrence, so held-out items never reappear in the training part.
- 80/10/10 random split (rating, review families), every user and item kept in train.
- fixed, seeded negatives: for each user, items the user never interacted with.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from recsys_jax.data.schema import DataError, Dataset

MIN_SEQUENCE_LENGTH = 3  # train >= 1, validation 1, test 1


def k_core(dataset: Dataset, k: int = 5) -> Dataset:
    """Iteratively drop users/items with < k interactions; re-index both densely."""
    inter = dataset.interactions
    keep = np.ones(len(inter), bool)
    while True:
        u_count = np.bincount(inter.user[keep], minlength=dataset.num_users)
        i_count = np.bincount(inter.item[keep], minlength=dataset.num_items)
        new_keep = keep & (u_count[inter.user] >= k) & (i_count[inter.item] >= k)
        if new_keep.sum() == keep.sum():
            break
        keep = new_keep
    if not keep.any():
        raise DataError(f"{dataset.name}: nothing is left after {k}-core filtering")
    rows = np.flatnonzero(keep)
    sub = inter.take(rows)
    users, user_new = np.unique(sub.user, return_inverse=True)
    items, item_new = np.unique(sub.item, return_inverse=True)
    # Keep first-appearance order for readability of ids; internal numbering carries no signal.
    sub.user, sub.item = user_new.astype(np.int32), item_new.astype(np.int32)
    return Dataset(
        dataset.name, [dataset.user_ids[u] for u in users], dataset.catalog.subset(items), sub
    )


@dataclasses.dataclass
class SequenceSplits:
    """Leave-one-out. `users` lists the user indices kept (>= 3 distinct items)."""

    users: np.ndarray  # [U] user index
    train: list[np.ndarray]  # per kept user: items before validation, chronological
    valid_target: np.ndarray  # [U]
    test_target: np.ndarray  # [U]
    dropped_users: int  # users with < 3 interactions, excluded with a warning

    def valid_history(self, k: int) -> np.ndarray:
        return self.train[k]

    def test_history(self, k: int) -> np.ndarray:
        return np.append(self.train[k], self.valid_target[k])

    def full_sequence(self, k: int) -> np.ndarray:
        return np.append(self.test_history(k), self.test_target[k])


def leave_one_out(dataset: Dataset) -> SequenceSplits:
    users, train, valid, test = [], [], [], []
    dropped = 0
    for u, seq in enumerate(dataset.sequences()):
        # A repeated item (raw reviews, users' CSV) would put the validation or test item into
        # the training part (docs/design.md, leakage rules): keep each user's first
        # interaction with an item.
        _, first = np.unique(seq, return_index=True)
        if len(first) < len(seq):
            seq = seq[np.sort(first)]
        if len(seq) < MIN_SEQUENCE_LENGTH:
            dropped += 1
            continue
        users.append(u)
        train.append(seq[:-2])
        valid.append(seq[-2])
        test.append(seq[-1])
    if dropped:
        warnings.warn(
            f"{dataset.name}: {dropped} user(s) with fewer than {MIN_SEQUENCE_LENGTH} "
            "interactions are left out of the leave-one-out splits",
            stacklevel=2,
        )
    if not users:
        raise DataError(
            f"{dataset.name}: no user has {MIN_SEQUENCE_LENGTH} or more interactions; "
            "leave-one-out needs train, validation and test items"
        )
    return SequenceSplits(
        np.array(users, np.int32),
        train,
        np.array(valid, np.int32),
        np.array(test, np.int32),
        dropped,
    )


@dataclasses.dataclass
class RatingSplits:
    """Row indices into `dataset.interactions` for each split."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def random_split(dataset: Dataset, seed: int = 0, fractions=(0.8, 0.1, 0.1)) -> RatingSplits:
    """Seeded 80/10/10 split; rows are moved into train until every user and item occurs there."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(f"split fractions {fractions} must sum to 1")
    inter = dataset.interactions
    n = len(inter)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_train = int(round(fractions[0] * n))
    n_valid = int(round(fractions[1] * n))
    split = np.empty(n, np.int8)
    split[perm[:n_train]] = 0
    split[perm[n_train : n_train + n_valid]] = 1
    split[perm[n_train + n_valid :]] = 2
    # Cover every user and item in train: move one held-out row for each uncovered one.
    for col, size in ((inter.user, dataset.num_users), (inter.item, dataset.num_items)):
        covered = np.zeros(size, bool)
        covered[col[split == 0]] = True
        for row in perm:
            if not covered[col[row]]:
                split[row] = 0
                covered[col[row]] = True
    return RatingSplits(
        np.flatnonzero(split == 0), np.flatnonzero(split == 1), np.flatnonzero(split == 2)
    )


def sample_negatives(dataset: Dataset, users: np.ndarray, n: int = 99, seed: int = 0) -> np.ndarray:
    """[len(users), n] items each user never interacted with, uniform without replacement."""
    seqs = dataset.sequences()
    if n >= dataset.num_items:
        raise DataError(f"cannot sample {n} negatives from a catalog of {dataset.num_items} items")
    rng = np.random.default_rng(seed)
    out = np.empty((len(users), n), np.int32)
    for row, u in enumerate(users):
        seen = set(seqs[u].tolist())
        if dataset.num_items - len(seen) < n:
            raise DataError(
                f"user {dataset.user_ids[u]} has interacted with too many items to "
                f"draw {n} negatives"
            )
        chosen: list[int] = []
        picked = set()
        while len(chosen) < n:
            for item in rng.integers(0, dataset.num_items, size=2 * n).tolist():
                if item not in seen and item not in picked:
                    picked.add(item)
                    chosen.append(item)
                    if len(chosen) == n:
                        break
        out[row] = chosen
    return out
