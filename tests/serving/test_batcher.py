"""MicroBatcher: concurrent callers get their own results, and concurrent work merges."""

import threading
import time

import pytest

from recsys_jax.serving.batcher import MicroBatcher, Overloaded


def test_concurrent_requests_are_batched_and_answered_in_order():
    sizes = []

    def run(items):
        sizes.append(len(items))
        time.sleep(0.01)
        return [x * 10 for x in items]

    batcher = MicroBatcher(run, max_batch=8, max_wait_ms=20)
    results = {}

    def worker(t):
        for i in range(25):
            results[(t, i)] = batcher.submit(t * 100 + i).result(timeout=10)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert results == {(t, i): (t * 100 + i) * 10 for t in range(8) for i in range(25)}
    assert sum(sizes) == 200 and max(sizes) <= 8
    assert len(sizes) < 200  # requests really ran together
    assert batcher.batches == len(sizes) and batcher.items == 200


def test_a_failing_batch_reaches_every_caller_and_the_batcher_survives():
    calls = []

    def run(items):
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return items

    batcher = MicroBatcher(run, max_batch=4, max_wait_ms=1)
    with pytest.raises(RuntimeError, match="boom"):
        batcher.submit(1).result(timeout=10)
    assert batcher.submit(2).result(timeout=10) == 2
    batcher.close()


def test_a_full_queue_refuses_work():
    gate = threading.Event()
    batcher = MicroBatcher(
        lambda items: (gate.wait(10), items)[1], max_batch=1, max_wait_ms=0, max_queue=2
    )
    first = batcher.submit(0)
    time.sleep(0.05)  # the worker holds item 0; the queue is empty again
    batcher.submit(1), batcher.submit(2)
    with pytest.raises(Overloaded, match="server busy"):
        batcher.submit(3)
    gate.set()
    assert first.result(timeout=10) == 0
    batcher.close()


def test_setup_runs_first_and_ready_waits_for_it():
    gate, order = threading.Event(), []
    batcher = MicroBatcher(
        lambda items: (order.append(items), items)[1],
        max_batch=4,
        max_wait_ms=1,
        setup=lambda: (gate.wait(10), order.append("setup")),
    )
    future = batcher.submit(1)  # queued while setup runs
    assert not batcher.ready.wait(0.05) and not future.done()
    gate.set()
    assert future.result(timeout=10) == 1 and future.batch_size == 1
    assert batcher.ready.is_set() and order == ["setup", [1]]
    batcher.close()


def test_a_cancelled_request_is_dropped_from_its_batch():
    gate, seen = threading.Event(), []
    batcher = MicroBatcher(
        lambda items: (gate.wait(10), seen.append(list(items)), items)[2],
        max_batch=4,
        max_wait_ms=1,
    )
    first = batcher.submit(0)
    time.sleep(0.05)  # the worker holds item 0
    kept, dropped = batcher.submit(1), batcher.submit(2)
    assert dropped.cancel()  # its caller gave up before the batch started
    gate.set()
    assert first.result(timeout=10) == 0 and kept.result(timeout=10) == 1
    assert kept.batch_size == 1 and seen == [[0], [1]]
    batcher.close()
