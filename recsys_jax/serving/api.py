"""The HTTP layer of `python -m recsys_jax.serve`: a FastAPI app over `RecommendService`, run
by uvicorn on one asyncio event loop (the model runs on the micro-batcher's thread).

Routes      POST /recommend  body and answers as in `requests.py`, described by the pydantic
                             models of `schema.py` (validation itself is the service's, so messages
                             and status codes are the same everywhere)
            GET  /health     liveness, bundle info and counters: 200 while the process runs
            GET  /ready      503 until the warm-up compiles are done, then 200
            GET  /docs       the OpenAPI page; GET /openapi.json the description itself
Errors      every answer is JSON, errors as {"error": "..."}: the service's 400/413/422/503/500,
            404 for an unknown route (GET or POST), 405 for other methods, 501 for methods
            HTTP does not define, 413 for a body over `max_body` bytes, 400 for a malformed
            request line or headers, 500 (with the traceback on stderr) for a bug.
Bodies      read as they arrive, keeping at most `max_body` bytes; a longer one is read and
            dropped up to `max_drain` bytes so the client gets its 413 instead of a reset, and
            the connection is then closed.
Timeouts    `ServeProtocol` closes a connection that sends nothing for `connection_timeout`
            seconds while the server waits on it: before or inside a request's head or body,
            or idle between requests. A connection costs a socket and a few kB, no thread, so
            idle or half-open ones cannot starve the server, and each is gone after the timeout.
Shutdown    on SIGTERM or SIGINT the listening socket closes, idle connections are closed,
            requests in flight (and their micro-batch) finish, then `run` returns.
Access log  one JSON line per request on stderr (`AccessLog`).
"""

from __future__ import annotations

import importlib.metadata
import json
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

from recsys_jax.serving.requests import RecommendService
from recsys_jax.serving.schema import (
    ErrorAnswer,
    Health,
    Readiness,
    RecommendAnswer,
    body_schema,
)

MAX_BODY = 1 << 20
# A body over MAX_BODY is read and dropped up to this size before the 413, so the client gets
# the answer instead of a reset while it is still sending; beyond it the connection is cut.
MAX_DRAIN = 64 << 20
CONNECTION_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 30.0
HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
ROUTES = "use POST /recommend, GET /health, GET /ready or GET /docs"


# -- access log ------------------------------------------------------------------------------


class AccessLog:
    """One JSON object per line: time, client, method, path, status, latency_ms and, for
    POST /recommend, batch_size (the largest micro-batch the body's requests ran in)."""

    def __init__(self, stream=None):
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, **fields: Any) -> None:
        record = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), **fields}
        line = json.dumps(record) + "\n"
        stream = self._stream or sys.stderr
        with self._lock:
            try:
                stream.write(line)
                stream.flush()
            except (OSError, ValueError):  # stderr closed: serving matters more than logging
                pass


# -- the app ---------------------------------------------------------------------------------


class BodyTooLarge(Exception):
    def __init__(self, size: int):
        self.size = size


async def read_body(request: Request, max_body: int, max_drain: int) -> bytes:
    """The body, or BodyTooLarge after reading (and dropping) up to `max_drain` bytes of it."""
    declared = request.headers.get("content-length", "")
    declared = int(declared) if declared.isdigit() else None
    if declared is not None and declared > max_drain:
        raise BodyTooLarge(declared)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= max_body:
            chunks.append(chunk)
        elif size > max_drain:
            break
    if size > max_body:
        raise BodyTooLarge(max(size, declared or 0))
    return b"".join(chunks)


def _version() -> str:
    try:
        return importlib.metadata.version("recsys_jax")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _json(status: int, payload: dict, close: bool = False, headers=None) -> JSONResponse:
    headers = dict(headers or {})
    if close:
        headers["Connection"] = "close"
    return JSONResponse(payload, status, headers=headers)


def build_api(
    service: RecommendService, max_body: int = MAX_BODY, max_drain: int = MAX_DRAIN
) -> FastAPI:
    errors = {
        code: {"model": ErrorAnswer, "description": what}
        for code, what in [
            (400, "malformed JSON or field types"),
            (413, f"body over {max_body} bytes, too many requests, or history too long"),
            (422, "unknown item, k out of range or empty history"),
            (500, "a bug"),
            (503, "queue full or no answer in time"),
        ]
    }
    api = FastAPI(
        title="recsys_jax recommendations",
        version=_version(),
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )

    @api.post(
        "/recommend",
        summary="Recommend the next items for one or several users",
        response_model=None,
        responses={200: {"model": RecommendAnswer}, **errors},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": body_schema()[0]}},
            }
        },
    )
    async def recommend(request: Request):
        try:
            body = await read_body(request, max_body, max_drain)
        except BodyTooLarge as e:
            return _json(413, {"error": f"body of {e.size} bytes; at most {max_body}"}, True)
        except ClientDisconnect:  # or closed by the connection timeout: nobody to answer
            return _json(408, {"error": "the request body did not arrive"}, True)
        status, payload, batch = await service.recommend_async(body)
        if batch is not None:
            request.state.batch_size = batch
        return _json(status, payload)

    @api.get(
        "/health",
        summary="Liveness, bundle info and counters",
        response_model=None,
        responses={200: {"model": Health}},
    )
    async def health():
        return _json(200, service.health())

    @api.get(
        "/ready",
        summary="200 once the batch sizes are compiled, 503 before",
        response_model=None,
        responses={200: {"model": Readiness}, 503: {"model": Readiness}},
    )
    async def ready():
        return _json(*service.readiness())

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        method, path = request.method, request.url.path
        if exc.status_code == 404 or (exc.status_code == 405 and method in ("GET", "POST")):
            return _json(404, {"error": f"no route {method} {path}; {ROUTES}"})
        if exc.status_code == 405:
            error = {"error": f"method {method} not allowed; {ROUTES}"}
            return _json(405, error, True, headers=exc.headers)
        return _json(exc.status_code, {"error": str(exc.detail)}, headers=exc.headers)

    @api.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return _json(400, {"error": f"invalid request: {exc.errors()}"})

    @api.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        return _json(500, {"error": f"internal error: {type(exc).__name__}: {exc}"}, True)

    def openapi() -> dict:
        if api.openapi_schema is None:
            schema = get_openapi(
                title=api.title,
                version=api.version,
                description=api.description,
                routes=api.routes,
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(body_schema()[1])
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi
    return api


class ServeApp:
    """The ASGI app uvicorn runs: the FastAPI routes plus what sits in front of them (501 for
    unknown methods, a JSON 500 for anything that escapes, one access-log line per request)."""

    def __init__(self, api: FastAPI, access_log: Callable[..., None] | None = None):
        self.api = api
        self.access_log = access_log

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.api(scope, receive, send)
        start = time.perf_counter()
        sent = {"status": None}

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            await send(message)

        try:
            method = scope["method"]
            if method not in HTTP_METHODS:
                error = {"error": f"Unsupported method ({method!r}); {ROUTES}"}
                await _json(501, error, True)(scope, receive, send_and_note)
            else:
                await self.api(scope, receive, send_and_note)
        except Exception as e:  # noqa: BLE001 - answered (if not yet) and logged, not re-raised
            traceback.print_exception(e)
            if sent["status"] is None:
                error = {"error": f"internal error: {type(e).__name__}: {e}"}
                await _json(500, error, True)(scope, receive, send_and_note)
        finally:
            if self.access_log is not None:
                fields = {
                    "client": (scope.get("client") or [None])[0],
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": sent["status"],
                    "latency_ms": round(1000 * (time.perf_counter() - start), 2),
                }
                batch = scope.get("state", {}).get("batch_size")
                if batch is not None:
                    fields["batch_size"] = batch
                self.access_log(**fields)


def create_app(
    service: RecommendService,
    max_body: int = MAX_BODY,
    max_drain: int = MAX_DRAIN,
    access_log: Callable[..., None] | None = None,
) -> ServeApp:
    return ServeApp(build_api(service, max_body, max_drain), access_log)


# -- connections -----------------------------------------------------------------------------


class ServeProtocol(H11Protocol):
    """uvicorn's h11 protocol with a timeout while the server waits on the client (uvicorn's
    own only covers idle keep-alive connections, not a request line, head or body that never
    completes), and a JSON body on the 400 for a request it cannot parse."""

    connection_timeout = CONNECTION_TIMEOUT_S
    request_log: Callable[..., None] | None = None  # (uvicorn's own `access_log` is a flag)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        cycle = self.cycle
        # Still waiting for (the rest of) a request: its head, its body, or the next one.
        if cycle is None or cycle.response_complete or cycle.more_body:
            self._arm()

    def _arm(self) -> None:
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(
            self.connection_timeout, self._timed_out
        )

    def _timed_out(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"error": f"Bad request: {msg}"}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        try:
            for event in (
                h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:  # a response was already under way
            pass
        self.transport.close()
        if self.request_log is not None:
            client = self.client[0] if self.client else None
            self.request_log(client=client, method=None, path=None, status=400, latency_ms=None)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None] | None):
        super().__init__(config)
        self._on_started = on_started
        self.early_signal: int | None = None
        self.stop_signal: int | None = None

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        if self.early_signal is not None:  # arrived before uvicorn took the signals over
            self.should_exit = True
        elif self.started and self._on_started is not None:
            self._on_started()

    def handle_exit(self, sig, frame) -> None:
        # A signal handler: it only notes the signal (printing here could re-enter a write
        # to stderr that the signal interrupted).
        self.stop_signal = sig
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets=None) -> None:
        why = signal.Signals(self.stop_signal).name if self.stop_signal else "stop"
        print(f"[serve] {why}: finishing the requests in flight", file=sys.stderr, flush=True)
        await super().shutdown(sockets=sockets)


def make_server(
    app: ServeApp,
    connection_timeout: float = CONNECTION_TIMEOUT_S,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT_S,
    verbose: bool = False,
    on_started: Callable[[], None] | None = None,
) -> uvicorn.Server:
    protocol = type(
        "TimedServeProtocol",
        (ServeProtocol,),
        {"connection_timeout": connection_timeout, "request_log": staticmethod(app.access_log)},
    )
    config = uvicorn.Config(
        app,
        http=protocol,
        ws="none",
        interface="asgi3",
        lifespan="off",
        access_log=False,
        log_level="info" if verbose else "error",
        timeout_keep_alive=connection_timeout,
        timeout_graceful_shutdown=shutdown_timeout,
        proxy_headers=False,
        server_header=False,
    )
    return _Server(config, on_started)


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=backlog)


def run(server: uvicorn.Server, sock: socket.socket) -> None:
    """Serve on `sock` until SIGTERM or SIGINT, then shut down gracefully and return (the
    signal is not re-raised: the caller exits normally)."""

    def note(sig, frame):
        server.early_signal = sig

    previous = {s: signal.signal(s, note) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
