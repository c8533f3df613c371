"""k-core, leave-one-out, the 80/10/10 split and the fixed test negatives (docs/design.md,
leakage rules)."""

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_jax.data import readers, splits
from recsys_jax.data.schema import DataError, build_dataset

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_dataset(seed: int, n_users=30, n_items=40, max_len=12, ratings=True, repeats=True):
    """Random events with shuffled timestamps (and some repeated items when `repeats`)."""
    rng = np.random.default_rng(seed)
    events = []
    for u in range(n_users):
        n = int(rng.integers(1, max_len + 1))
        items = rng.choice(n_items, size=n, replace=repeats)
        times = rng.permutation(n) * 10
        for it, t in zip(items, times):
            ev = (f"u{u}", f"i{it}", int(t))
            if ratings:
                ev += (float(rng.integers(1, 6)),)
            events.append(ev)
    return build_dataset(f"random{seed}", events, {}, with_rating=ratings)


def loo(ds):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return splits.leave_one_out(ds)


@FAST
@given(st.integers(0, 10_000))
def test_leave_one_out_has_no_leakage(seed):
    ds = random_dataset(seed)
    s = loo(ds)
    seqs = ds.sequences()
    for k, u in enumerate(s.users):
        train = s.train[k].tolist()
        assert s.valid_target[k] not in train and s.test_target[k] not in train
        assert s.valid_target[k] != s.test_target[k]
        assert s.valid_history(k).tolist() == train
        assert s.test_history(k).tolist() == train + [s.valid_target[k]]
        assert len(train) >= 1
        # Chronological: the full sequence is the user's items in time order, first occurrences.
        _, first = np.unique(seqs[u], return_index=True)
        assert s.full_sequence(k).tolist() == seqs[u][np.sort(first)].tolist()
    kept = set(s.users.tolist())
    short = [u for u in range(ds.num_users) if len(set(seqs[u].tolist())) < 3]
    assert kept.isdisjoint(short) and len(kept) + len(short) == ds.num_users
    assert s.dropped_users == len(short)


def test_leave_one_out_last_is_test_second_last_is_validation():
    ds = build_dataset("t", [("a", "x", 1), ("a", "y", 2), ("a", "z", 3), ("a", "w", 4)], {})
    s = splits.leave_one_out(ds)
    ids = ds.catalog.item_ids
    assert [ids[i] for i in s.train[0]] == ["x", "y"]
    assert ids[s.valid_target[0]] == "z" and ids[s.test_target[0]] == "w"


def test_short_users_are_left_out_with_a_warning():
    events = [
        ("a", "x", 1),
        ("a", "y", 2),
        ("a", "z", 3),
        ("b", "x", 1),
        ("b", "y", 2),
        ("c", "x", 1),
        ("c", "x", 2),
        ("c", "y", 3),
    ]  # c: only 2 distinct items
    ds = build_dataset("t", events, {})
    with pytest.warns(UserWarning, match="2 user"):
        s = splits.leave_one_out(ds)
    assert [ds.user_ids[u] for u in s.users] == ["a"] and s.dropped_users == 2


def test_no_user_long_enough_is_an_error():
    ds = build_dataset("t", [("a", "x", 1), ("a", "y", 2), ("b", "x", 1)], {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="leave-one-out"):
            splits.leave_one_out(ds)


@FAST
@given(st.integers(0, 10_000), st.integers(0, 2**31))
def test_random_split_covers_users_and_items_and_is_seeded(data_seed, split_seed):
    ds = random_dataset(data_seed)
    r = splits.random_split(ds, seed=split_seed)
    all_rows = np.concatenate([r.train, r.valid, r.test])
    assert sorted(all_rows.tolist()) == list(range(len(ds.interactions)))  # a partition
    inter = ds.interactions
    assert set(inter.user[r.train].tolist()) == set(range(ds.num_users))
    assert set(inter.item[r.train].tolist()) == set(range(ds.num_items))
    again = splits.random_split(ds, seed=split_seed)
    for a, b in zip((r.train, r.valid, r.test), (again.train, again.valid, again.test)):
        np.testing.assert_array_equal(a, b)


def test_random_split_fractions_and_seed_dependence():
    ds = random_dataset(0, n_users=400, n_items=50, max_len=30)
    n = len(ds.interactions)
    r0, r1 = splits.random_split(ds, seed=0), splits.random_split(ds, seed=1)
    assert abs(len(r0.valid) / n - 0.1) < 0.02 and abs(len(r0.test) / n - 0.1) < 0.02
    assert len(r0.train) >= round(0.8 * n)
    assert not np.array_equal(r0.test, r1.test)
    with pytest.raises(DataError, match="sum to 1"):
        splits.random_split(ds, fractions=(0.5, 0.1, 0.1))


@FAST
@given(st.integers(0, 10_000), st.integers(0, 2**31))
def test_negatives_fixed_by_seed_unseen_and_distinct(data_seed, neg_seed):
    ds = random_dataset(data_seed, n_items=40)
    s = loo(ds)
    neg = splits.sample_negatives(ds, s.users, n=10, seed=neg_seed)
    assert neg.shape == (len(s.users), 10) and neg.dtype == np.int32
    np.testing.assert_array_equal(neg, splits.sample_negatives(ds, s.users, n=10, seed=neg_seed))
    seqs = ds.sequences()
    for k, u in enumerate(s.users):
        row = neg[k].tolist()
        assert len(set(row)) == len(row)
        assert set(row).isdisjoint(seqs[u].tolist())  # everything the user touched
        assert s.test_target[k] not in row and s.valid_target[k] not in row
        assert all(0 <= i < ds.num_items for i in row)


def test_negatives_depend_on_seed_and_need_enough_items():
    ds = random_dataset(3, n_items=60)
    s = loo(ds)
    a = splits.sample_negatives(ds, s.users, n=20, seed=0)
    b = splits.sample_negatives(ds, s.users, n=20, seed=1)
    assert not np.array_equal(a, b)
    with pytest.raises(DataError, match="negatives"):
        splits.sample_negatives(ds, s.users, n=ds.num_items, seed=0)
    dense = build_dataset("d", [("a", "x", 1), ("a", "y", 2), ("a", "z", 3), ("b", "w", 1)], {})
    with pytest.raises(DataError, match="too many items"):
        splits.sample_negatives(dense, np.array([0]), n=2, seed=0)


@FAST
@given(st.integers(0, 10_000), st.integers(2, 5))
def test_k_core_leaves_every_user_and_item_with_k(seed, k):
    ds = random_dataset(seed, n_users=60, n_items=20, max_len=15, repeats=False)
    try:
        core = splits.k_core(ds, k)
    except DataError:
        return  # nothing survives: allowed, and said clearly
    inter = core.interactions
    assert np.bincount(inter.user, minlength=core.num_users).min() >= k
    assert np.bincount(inter.item, minlength=core.num_items).min() >= k
    assert core.num_users == len(core.user_ids) and core.num_items == len(core.catalog)
    # Ids survive re-indexing: every kept event existed in the input.
    before = {
        (ds.user_ids[u], ds.catalog.item_ids[i])
        for u, i in zip(ds.interactions.user, ds.interactions.item)
    }
    after = {(core.user_ids[u], core.catalog.item_ids[i]) for u, i in zip(inter.user, inter.item)}
    assert after <= before
    assert splits.k_core(core, k).summary_counts() == core.summary_counts()  # stable


def test_k_core_everything_removed_is_an_error():
    ds = build_dataset("t", [("a", "x", 1), ("b", "y", 1)], {})
    with pytest.raises(DataError, match="nothing is left"):
        splits.k_core(ds, 2)


def test_beauty_leave_one_out_sizes():
    ds = readers.read_embedded_beauty()
    s = splits.leave_one_out(ds)
    assert len(s.users) == 22363 and s.dropped_users == 0
    assert sum(len(t) for t in s.train) == 198502 - 2 * 22363
