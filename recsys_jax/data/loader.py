"""Grain input pipeline: prepared records -> model examples -> batches, resumable.

    it = make_train_iterator(data.source("train"), transform, batch_size=64, seed=0)
    batch = next(it)
    state = it.get_state()        # save with the checkpoint (e.g. grain's Orbax handler)
    ...
    it2 = make_train_iterator(data.source("train"), transform, batch_size=64, seed=0)
    it2.set_state(state)          # continues with exactly the batches `it` would produce next

Pipeline (grain.MapDataset, all lazy and index-based; Grain moves record indices only):

    range(N) -> shuffle(seed, a new permutation every epoch)
             -> shard: this process takes positions shard_index, shard_index + shard_count, ...
                of each epoch's permutation (the last N % shard_count positions of each epoch
                are skipped so every process has the same number of records per epoch)
             -> repeat(num_epochs; None = forever)
             -> batch(batch_size, drop_remainder) of record indices
             -> per batch: source[record], transform(record, rng) with
                rng = np.random.default_rng([seed, epoch, record]), then batch_fn

Determinism contract. Given the same source (same records in the same order), `seed`,
`shard_index`, `shard_count`, `batch_size`, `drop_remainder`, `num_epochs` and a deterministic
`transform` (one that draws randomness only from the `rng` it is given) and `batch_fn`:
  * the sequence of batches is identical on every run, machine and thread count;
  * `set_state(state)` on a fresh iterator built with those arguments continues exactly where
    the iterator that produced `state` was (state is just the position in the stream);
  * the example made from a record in a given epoch depends only on (seed, epoch, record
    index), not on the shard layout or the batch size;
  * for one epoch, the shards of processes 0..shard_count-1 are disjoint.
Batches may span an epoch boundary (the stream is continuous).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grain
import numpy as np

Transform = Callable[[Any, np.random.Generator], Any]

# Each pipeline element is a whole batch: prefetch a few on one thread, which overlaps batch
# building with the compiled step. Batch building is Python holding the GIL, so a second thread
# only contends with the first (measured: ~20 % fewer batches/s); worker processes
# (`workers`) are what scale it. Grain's own default, 500 elements on 16 threads, would hold
# hundreds of batches.
DEFAULT_READ_OPTIONS = grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)


def _shard_defaults(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    if shard_index is None or shard_count is None:
        import jax  # only when the caller relies on the process defaults

        shard_index = jax.process_index() if shard_index is None else shard_index
        shard_count = jax.process_count() if shard_count is None else shard_count
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise ValueError(f"need 0 <= shard_index < shard_count, got {shard_index}, {shard_count}")
    return int(shard_index), int(shard_count)


def make_train_dataset(
    source,
    transform: Transform,
    batch_size: int,
    *,
    seed: int,
    batch_fn: Callable[[Sequence[Any]], Any] | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    num_epochs: int | None = None,
    drop_remainder: bool = True,
) -> grain.MapDataset:
    """The `grain.MapDataset` behind `make_train_iterator` (see the module docstring)."""
    shard_index, shard_count = _shard_defaults(shard_index, shard_count)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    n = len(source)
    per_shard = n // shard_count
    if per_shard == 0:
        raise ValueError(f"{n} records cannot be split over {shard_count} processes")

    # Grain's layers carry record indices only; a whole batch of records is read,
    # transformed and collated in one call, so the per-element cost of the layers stays small.
    ds = grain.MapDataset.range(n)
    ds = ds.shuffle(seed=seed)  # epoch e uses the permutation seeded by seed + e
    ds = ds[shard_index : per_shard * shard_count : shard_count]
    ds = ds.repeat(num_epochs)
    collate = batch_fn or _stack

    def make_batch(batch_index, record_indices):
        # Element k of batch b is this shard's stream position b * batch_size + k; each epoch
        # of the shard holds per_shard positions (and used the shuffle of that epoch).
        first = batch_index * batch_size
        examples = []
        for k, record_index in enumerate(record_indices):
            epoch = (first + k) // per_shard
            rng = np.random.default_rng([seed, epoch, int(record_index)])
            examples.append(transform(source[int(record_index)], rng))
        return collate(examples)

    ds = ds.batch(batch_size, drop_remainder=drop_remainder, batch_fn=list)
    return ds.map_with_index(make_batch)


def _stack(examples: Sequence[Any]) -> Any:
    """The default collation: each leaf stacked along a new leading axis."""
    import jax

    return jax.tree.map(lambda *leaves: np.stack(leaves), *examples)


def make_train_iterator(
    source,
    transform: Transform,
    batch_size: int,
    *,
    seed: int,
    batch_fn: Callable[[Sequence[Any]], Any] | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    num_epochs: int | None = None,
    drop_remainder: bool = True,
    read_options: grain.ReadOptions | None = None,
    workers: int = 0,
) -> grain.DatasetIterator:
    """Iterator of batches with `get_state()` / `set_state()`.

    source: random-access records (`len`, `[i]`), e.g. `PreparedData.source("train")`.
    transform: `(record, rng) -> example` (a dict of arrays, or whatever `batch_fn` takes); all
        randomness from `rng`.
    batch_size: examples per batch on this process.
    batch_fn: list of examples -> batch (e.g. padding); default stacks each leaf.
    shard_index / shard_count: default `jax.process_index()` / `jax.process_count()`.
    num_epochs: None repeats forever.
    read_options: grain prefetch threads/buffer (default `DEFAULT_READ_OPTIONS`); the batches
        do not depend on them. `grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)`
        computes each batch on demand in the calling thread.
    workers: worker processes building batches (0: threads in this process). Prompt building
        and masking are Python, so on an accelerator they bound throughput unless spread over
        processes; the batches and their order do not depend on this number.
    """
    ds = make_train_dataset(
        source,
        transform,
        batch_size,
        seed=seed,
        batch_fn=batch_fn,
        shard_index=shard_index,
        shard_count=shard_count,
        num_epochs=num_epochs,
        drop_remainder=drop_remainder,
    )
    it_ds = ds.to_iter_dataset(read_options=read_options or DEFAULT_READ_OPTIONS)
    if workers > 0:
        from absl import flags  # grain's worker pool reads absl flags, unparsed outside absl.app

        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        it_ds = it_ds.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2)
        )
    return iter(it_ds)
