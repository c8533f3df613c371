"""JSON recommend requests: parse, validate against the bundle, answer through the batcher.

Request   {"history": ["B004756YJA", "<an exact title>"], "k": 10, "exclude_history": true}
          or {"requests": [<request>, ...]} for several users in one body.
Response  {"items": [{"id": ..., "title": ..., "score": ...}, ...]}
          or {"results": [{"items": [...]}, ...]} in request order.
Errors    {"error": "<what is wrong and what to do>"} with status 400 (malformed JSON or field
          types), 413 (too many requests in one body, history too long), 422 (unknown item, k
          out of range, empty history), 503 (queue full or timed out), 500 (a bug).
Every request in a body is checked before any runs, so one bad entry fails the body at once.
`recommend` blocks its thread until the answer is there; `recommend_async` awaits it on an
asyncio event loop (the HTTP server's), holding no thread while the model runs.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from recsys_jax.data.schema import UnknownItemError
from recsys_jax.serving.batcher import MicroBatcher, Overloaded

MAX_HISTORY = 512
_FIELDS = {"history", "k", "exclude_history"}


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def parse(body: bytes, max_requests: int) -> tuple[list[dict], bool]:
    """-> (request dicts, whether the body was a batch). Raises RequestError."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise RequestError(400, f"malformed JSON: {e}") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise RequestError(400, 'the body must be a JSON object like {"history": [...], "k": 10}')
    if "requests" in data:
        reqs = data["requests"]
        if set(data) != {"requests"} or not isinstance(reqs, list) or not reqs:
            raise RequestError(400, '"requests" must be the only key and a non-empty list')
        if len(reqs) > max_requests:
            raise RequestError(
                413, f"{len(reqs)} requests in one body; at most {max_requests} — split the batch"
            )
        return reqs, True
    return [data], False


def check(rec, req: Any, where: str, default_k: int) -> tuple[list[int], int, bool]:
    """One request dict -> (internal history ids, k, exclude_history)."""
    if not isinstance(req, dict):
        raise RequestError(400, f"{where}: each request must be a JSON object")
    unknown = set(req) - _FIELDS
    if unknown:
        raise RequestError(
            400, f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(_FIELDS)}"
        )
    history = req.get("history")
    if not isinstance(history, list) or not all(
        isinstance(x, (str, int)) and not isinstance(x, bool) for x in history
    ):
        raise RequestError(400, f'{where}: "history" must be a list of item ids or titles')
    if not history:
        raise RequestError(422, f"{where}: empty history; give at least one item")
    if len(history) > MAX_HISTORY:
        raise RequestError(413, f"{where}: history of {len(history)} items; at most {MAX_HISTORY}")
    exclude = req.get("exclude_history", True)
    if not isinstance(exclude, bool):
        raise RequestError(400, f'{where}: "exclude_history" must be true or false')
    k = req.get("k", default_k)
    if isinstance(k, bool) or not isinstance(k, int):
        raise RequestError(400, f'{where}: "k" must be an integer, got {k!r}')
    try:
        ids = [rec.resolve(x) for x in history]
        rec.check_k(k, len(ids), exclude)
    except (UnknownItemError, ValueError) as e:
        raise RequestError(422, f"{where}: {e}") from None
    return ids, k, exclude


class RecommendService:
    """The endpoint's logic, independent of HTTP: body bytes -> (status, JSON payload).

    With `warmup`, the recommender compiles its batch sizes on the batcher thread first;
    requests that arrive meanwhile wait for it, and `ready` is False until it is done."""

    def __init__(
        self,
        rec,
        max_batch: int | None = None,
        max_wait_ms: float = 5.0,
        max_requests: int = 64,
        timeout_s: float = 60.0,
        warmup: bool = False,
        log: Callable[[str], None] | None = None,
    ):
        self.rec = rec
        self.max_requests = max_requests
        self.timeout_s = timeout_s
        self.default_k = min(10, rec.beam)
        self._log = log
        self.batcher = MicroBatcher(
            rec.run,
            max_batch or rec.max_batch,
            max_wait_ms,
            setup=self._warmup if warmup else None,
        )
        self._lock = threading.Lock()
        self.answered = 0
        self.failed = 0

    def _warmup(self) -> None:
        start = time.monotonic()
        try:
            self.rec.warmup(log=self._log)
        except Exception as e:
            if self._log:
                self._log(f"[serve] warm-up failed: {type(e).__name__}: {e}")
            raise
        if self._log:
            self._log(f"[serve] ready: batch sizes compiled in {time.monotonic() - start:.1f} s")

    @property
    def ready(self) -> bool:
        return self.batcher.ready.is_set()

    def submit(self, body: bytes) -> tuple[list[Future], bool]:
        """Parse and check every request in the body, then queue them all on the batcher ->
        (one Future per request, whether the body was a batch). Raises RequestError or
        Overloaded."""
        reqs, batched = parse(body, self.max_requests)
        checked = [
            check(self.rec, r, f"requests[{i}]" if batched else "request", self.default_k)
            for i, r in enumerate(reqs)
        ]
        return [self.batcher.submit(c) for c in checked], batched

    def recommend(self, body: bytes) -> tuple[int, dict]:
        try:
            futures, batched = self.submit(body)
            rows = [f.result(timeout=self.timeout_s) for f in futures]
        except Exception as e:  # noqa: BLE001 - the server must answer, not die
            return self.failure(e)
        return self.success(rows, batched)

    async def recommend_async(self, body: bytes) -> tuple[int, dict, int | None]:
        """`recommend` for an asyncio event loop -> (status, payload, the largest micro-batch
        the body's requests ran in, or None when none ran)."""
        try:
            futures, batched = self.submit(body)
            rows = await asyncio.wait_for(
                asyncio.gather(*(asyncio.wrap_future(f) for f in futures)), self.timeout_s
            )
        except Exception as e:  # noqa: BLE001 - the server must answer, not die
            return (*self.failure(e), None)
        return (*self.success(rows, batched), max(f.batch_size for f in futures))

    def success(self, rows: list, batched: bool) -> tuple[int, dict]:
        items = [[{"id": i, "title": t, "score": s} for i, t, s in r] for r in rows]
        payload = {"results": [{"items": x} for x in items]} if batched else {"items": items[0]}
        return self._count(200, payload)

    def failure(self, error: Exception) -> tuple[int, dict]:
        """A failed request's status and error payload (and it is counted as failed)."""
        if isinstance(error, RequestError):
            return self._count(error.status, {"error": error.message})
        if isinstance(error, Overloaded):
            return self._count(503, {"error": str(error)})
        if isinstance(error, TimeoutError):  # concurrent.futures' and asyncio's alike
            message = f"no answer within {self.timeout_s:.0f} s; the server is overloaded"
            return self._count(503, {"error": message + ", retry later"})
        return self._count(500, {"error": f"internal error: {type(error).__name__}: {error}"})

    def health(self) -> dict:
        manifest = self.rec.bundle.manifest
        return {
            "status": "ok",
            "ready": self.ready,
            "items": self.rec.num_items,
            "beam": self.rec.beam,
            "max_batch": self.batcher.max_batch,
            "max_requests": self.max_requests,
            "answered": self.answered,
            "failed": self.failed,
            "batches": self.batcher.batches,
            "batched_items": self.batcher.items,
            "bundle": {
                k: manifest.get(k)
                for k in ("created", "dtype", "recsys_jax_version", "jax_version")
            },
        }

    def readiness(self) -> tuple[int, dict]:
        """200 once the warm-up compiles are done (or none were asked for), else 503."""
        if self.ready:
            return 200, {"status": "ready"}
        error = self.batcher.setup_error
        if error is not None:
            return 503, {"status": "failed", "error": f"warm-up failed: {error}"}
        return 503, {"status": "warming up", "error": "compiling batch sizes; retry shortly"}

    def close(self) -> None:
        """Stop the batcher once the requests already queued have run."""
        self.batcher.close()

    def _count(self, status: int, payload: dict) -> tuple[int, dict]:
        with self._lock:
            if status == 200:
                self.answered += 1
            else:
                self.failed += 1
        return status, payload
