"""Micro-batching: requests from many threads run together in one call of the model.

A background thread takes the first waiting request, collects more for a short window (or
until `max_batch`), runs them as one batch and hands each caller its own result through a
Future. Under load batches fill up and throughput rises. The queue is bounded so an overloaded
server refuses work instead of piling it up.

The window is `max_wait_ms`, or 5 % of the last batch's run time when that is longer. Without
the second term, clients whose answers arrive while the next batch is already collecting miss
it, and a slow model settles into alternating half-full batches (measured: 8 closed-loop
clients on a 1.3 s model call gave batches of 4 at 5 ms, 8 at 50 ms, 1.8x the throughput).

`setup` (e.g. compiling the model's batch sizes) runs first on the same thread; requests
submitted meanwhile wait in the queue, and `ready` is set once it is done. Each answered
Future carries `batch_size`, the size of the batch it ran in. A Future cancelled before its
batch starts (its caller gave up) is dropped from the batch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

_STOP = object()


class Overloaded(RuntimeError):
    """The request queue is full."""


class MicroBatcher:
    def __init__(
        self,
        run_batch: Callable[[Sequence[Any]], Sequence[Any]],
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        setup: Callable[[], None] | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.batches = 0
        self.items = 0
        self._last_run = 0.0  # seconds the previous batch took
        self._setup = setup
        self.ready = threading.Event()
        self.setup_error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
        self._thread.start()

    def submit(self, item) -> Future:
        future: Future = Future()
        try:
            self._queue.put_nowait((item, future))
        except queue.Full:
            raise Overloaded(
                f"server busy: {self._queue.maxsize} requests already waiting; retry later"
            ) from None
        return future

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _loop(self) -> None:
        if self._setup is not None:
            try:
                self._setup()
            except Exception as e:  # noqa: BLE001 - reported through setup_error
                self.setup_error = e
        if self.setup_error is None:
            self.ready.set()
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = time.monotonic() + max(self.max_wait, 0.05 * self._last_run)
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    nxt = (
                        self._queue.get(timeout=remaining)
                        if remaining > 0
                        else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._run([b[0] for b in batch], [b[1] for b in batch])

    def _run(self, items, futures) -> None:
        live = [f.set_running_or_notify_cancel() for f in futures]
        if not all(live):
            items = [x for x, keep in zip(items, live) if keep]
            futures = [f for f, keep in zip(futures, live) if keep]
            if not items:
                return
        start = time.monotonic()
        try:
            results = self.run_batch(items)
        except Exception as e:  # noqa: BLE001 - delivered to every waiting caller
            for f in futures:
                f.set_exception(e)
            return
        finally:
            self._last_run = time.monotonic() - start
        self.batches += 1
        self.items += len(items)
        for f, r in zip(futures, results):
            f.batch_size = len(items)
            f.set_result(r)
