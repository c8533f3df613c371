"""Grain loader: seeded, resumable, sharded by process."""

import grain
import numpy as np
import pytest

from recsys_jax.data.loader import make_train_dataset, make_train_iterator

SYNC = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)  # no prefetch threads
N = 24
SOURCE = [{"user": np.int32(i), "items": np.arange(i % 5 + 1, dtype=np.int32)} for i in range(N)]


def transform(record, rng):
    """A model example: the record id, a random crop length and noise, all from `rng`."""
    items = record["items"]
    keep = int(rng.integers(1, len(items) + 1))
    return {
        "user": np.int32(record["user"]),
        "length": np.int32(keep),
        "noise": rng.random(3).astype(np.float32),
    }


def take(it, n):
    return [next(it) for _ in range(n)]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def iterator(seed=0, batch_size=4, **kw):
    kw.setdefault("shard_index", 0)
    kw.setdefault("shard_count", 1)
    kw.setdefault("read_options", SYNC)
    return make_train_iterator(SOURCE, transform, batch_size, seed=seed, **kw)


def test_same_seed_same_batches():
    assert_same(take(iterator(seed=5), 15), take(iterator(seed=5), 15))
    threaded = grain.ReadOptions(num_threads=4, prefetch_buffer_size=8)
    assert_same(take(iterator(seed=5), 15), take(iterator(seed=5, read_options=threaded), 15))
    a = np.concatenate([b["user"] for b in take(iterator(seed=5), 6)])
    b = np.concatenate([b["user"] for b in take(iterator(seed=6), 6)])
    assert not np.array_equal(a, b)


def test_each_epoch_is_a_new_permutation_of_all_records():
    batches = take(iterator(seed=1, batch_size=4), 3 * N // 4)
    users = np.concatenate([b["user"] for b in batches]).reshape(3, N)
    for epoch in users:
        assert sorted(epoch.tolist()) == list(range(N))
    assert not np.array_equal(users[0], users[1])
    noise = np.concatenate([b["noise"] for b in batches]).reshape(3, N, 3)
    first = {int(u): n.tobytes() for u, n in zip(users[0], noise[0])}
    second = {int(u): n.tobytes() for u, n in zip(users[1], noise[1])}
    assert first != second  # a record gets fresh randomness each epoch


@pytest.mark.parametrize("consumed", [3, 7, 13])  # mid-epoch, end of an epoch, next epoch
def test_restoring_state_continues_identically(consumed):
    it = iterator(seed=2, batch_size=4, read_options=None)  # default prefetching
    take(it, consumed)
    state = it.get_state()
    expected = take(it, 8)
    resumed = iterator(seed=2, batch_size=4)
    resumed.set_state(state)
    assert_same(take(resumed, 8), expected)


def test_shards_are_disjoint_and_equal_sized():
    seen = []
    for index in range(3):
        it = make_train_iterator(
            SOURCE[:23],
            transform,
            1,
            seed=9,
            shard_index=index,
            shard_count=3,
            num_epochs=1,
            read_options=SYNC,
        )
        seen.append([int(b["user"][0]) for b in it])
    assert [len(s) for s in seen] == [7, 7, 7]  # 23 // 3 each; two records skipped this epoch
    flat = [u for s in seen for u in s]
    assert len(set(flat)) == len(flat) and set(flat) <= set(range(23))


def test_example_does_not_depend_on_shard_layout():
    whole = {}
    for b in make_train_iterator(
        SOURCE, transform, 1, seed=4, shard_index=0, shard_count=1, num_epochs=1, read_options=SYNC
    ):
        whole[int(b["user"][0])] = b["noise"][0].tobytes()
    for index in range(2):
        for b in make_train_iterator(
            SOURCE,
            transform,
            1,
            seed=4,
            shard_index=index,
            shard_count=2,
            num_epochs=1,
            read_options=SYNC,
        ):
            assert whole[int(b["user"][0])] == b["noise"][0].tobytes()


def test_num_epochs_batch_fn_and_remainder():
    def pad(examples):
        return {"user": np.array([e["user"] for e in examples]), "count": len(examples)}

    batches = list(iterator(seed=0, batch_size=5, num_epochs=2, batch_fn=pad, drop_remainder=False))
    assert [b["count"] for b in batches] == [5] * 9 + [3]
    assert len(list(iterator(seed=0, batch_size=5, num_epochs=2))) == 9  # remainder dropped


def test_default_shard_is_this_process():
    ds = make_train_dataset(SOURCE, transform, 4, seed=0)  # jax.process_index()/count()
    assert len(ds) > 0
    first = next(iter(ds.to_iter_dataset()))
    assert first["user"].shape == (4,)


def test_bad_arguments():
    with pytest.raises(ValueError):
        make_train_dataset(SOURCE, transform, 4, seed=0, shard_index=2, shard_count=2)
    with pytest.raises(ValueError):
        make_train_dataset(SOURCE, transform, 0, seed=0, shard_index=0, shard_count=1)
    with pytest.raises(ValueError):
        make_train_dataset(SOURCE[:1], transform, 1, seed=0, shard_index=0, shard_count=2)


def test_prepared_tfds_source_through_the_loader(tmp_path):
    import warnings

    from recsys_jax.data.prepared import load_prepared
    from recsys_jax.data.schema import build_dataset
    from recsys_jax.data.tfds_builder import make_splits, write_prepared

    events = [(f"u{u}", f"i{(u + j) % 9}", j) for u in range(10) for j in range(3 + u % 4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_prepared(make_splits(build_dataset("mini", events, {}), num_negatives=2), tmp_path)
    source = load_prepared(tmp_path, "mini").source("train")

    def to_example(record, rng):
        padded = np.zeros(8, np.int32)
        padded[: len(record["items"])] = record["items"] + 1
        return {
            "user": np.int32(record["user"]),
            "items": padded,
            "pick": np.int32(rng.integers(len(record["items"]))),
        }

    def make():
        return make_train_iterator(
            source, to_example, 4, seed=1, shard_index=0, shard_count=1, read_options=SYNC
        )

    it = make()
    take(it, 2)
    state = it.get_state()
    expected = take(it, 5)
    resumed = make()
    resumed.set_state(state)
    assert_same(take(resumed, 5), expected)
    assert expected[0]["items"].shape == (4, 8)


@pytest.mark.slow
@pytest.mark.subprocess
def test_worker_processes_give_the_same_batches_and_resume():
    """`data.workers` moves batch building to processes without changing a single batch, and
    a checkpointed position restores into an iterator with workers."""
    expected = take(iterator(seed=3), 12)
    with_workers = iterator(seed=3, workers=2)
    assert_same(take(with_workers, 7), expected[:7])
    state = with_workers.get_state()
    resumed = iterator(seed=3, workers=2)
    resumed.set_state(state)
    assert_same(take(resumed, 5), expected[7:])
