"""JSON-over-HTTP recommendations from an exported bundle: `python -m recsys_jax.serve`.

    python -m recsys_jax.serve --bundle bundles/default --port 8080
    curl -s localhost:8080/health
    curl -s -X POST localhost:8080/recommend -d '{"history": ["B004756YJA"], "k": 5}'

POST /recommend takes {"history": [...], "k": 10} or {"requests": [...]} (schema and error
codes in `recsys_jax/serving/requests.py`); GET /health reports the bundle and counters.
Listens on 127.0.0.1 unless --host says otherwise: there is no authentication. Concurrent
requests are merged into micro-batches (`--max-batch`, `--max-wait-ms`). Standard library
HTTP server, one thread per connection; the model runs on the single batcher thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from recsys_jax.cli import report_error
from recsys_jax.serving.bundle import BundleError
from recsys_jax.serving.recommender import BundleRecommender
from recsys_jax.serving.requests import RecommendService

MAX_BODY = 1 << 20
# A body over MAX_BODY is read and dropped up to this size before the 413, so the client gets
# the answer instead of a reset while it is still sending; beyond it the connection is cut.
MAX_DRAIN = 64 << 20
CONNECTION_TIMEOUT_S = 30.0  # an idle or half-open connection holds a thread only this long


class Handler(BaseHTTPRequestHandler):
    server_version = "recsys_jax"
    protocol_version = "HTTP/1.1"  # keep-alive: clients may reuse one connection
    timeout = CONNECTION_TIMEOUT_S  # socket timeout per connection (StreamRequestHandler)

    def do_GET(self):
        if self.path.split("?")[0] == "/health":
            return self._reply(200, self.server.service.health())
        self._reply(404, {"error": f"no route GET {self.path}; use GET /health or POST /recommend"})

    def do_POST(self):
        if self.path.split("?")[0] != "/recommend":
            self._discard_body()
            return self._reply(404, {"error": f"no route POST {self.path}; use POST /recommend"})
        try:
            length = int(self.headers.get("Content-Length", ""))
            if length < 0:
                raise ValueError
        except ValueError:
            return self._reply(
                411, {"error": "a valid Content-Length header is required"}, close=True
            )
        if length > MAX_BODY:
            self._drain(length)
            return self._reply(
                413, {"error": f"body of {length} bytes; at most {MAX_BODY}"}, close=True
            )
        status, payload = self.server.service.recommend(self.rfile.read(length))
        self._reply(status, payload)

    def _not_allowed(self):
        self._discard_body()
        self._reply(
            405,
            {"error": f"method {self.command} not allowed; use GET /health or POST /recommend"},
            close=True,
        )

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _not_allowed

    def send_error(self, code, message=None, explain=None):
        """The standard library's own errors (bad request line, unknown method, header too
        long) as JSON like every other answer, instead of its HTML page."""
        try:
            phrase = self.responses.get(code, ("error",))[0]
            self._reply(code, {"error": message or phrase}, close=True)
        except OSError:  # the client is gone
            self.close_connection = True

    def _discard_body(self):
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = 0
        if 0 < length <= MAX_BODY:
            self.rfile.read(length)

    def _drain(self, length: int) -> None:
        left = length if length <= MAX_DRAIN else 0
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            left -= len(chunk)

    def _reply(self, status: int, payload: dict, close: bool = False):
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format, *args):
        if self.server.verbose:
            super().log_message(format, *args)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default listen backlog (5) drops connections under a burst of concurrent clients,
    # which then retry after a 1 s SYN timeout: a p99 of ~1 s for no reason.
    request_queue_size = 128


def make_server(
    service: RecommendService,
    host: str = "127.0.0.1",
    port: int = 0,
    verbose: bool = False,
    timeout: float = CONNECTION_TIMEOUT_S,
) -> ThreadingHTTPServer:
    handler = type("TimedHandler", (Handler,), {"timeout": timeout})
    server = Server((host, port), handler)
    server.service = service
    server.verbose = verbose
    return server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recsys_jax.serve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bundle", required=True, help="folder written by recsys_jax.export")
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default loopback only)"
    )
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument(
        "--max-batch", type=int, default=16, help="most requests run together in one model call"
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="how long a request waits for others to join its batch",
    )
    parser.add_argument(
        "--max-requests", type=int, default=64, help='most requests in one {"requests": [...]} body'
    )
    parser.add_argument(
        "--no-warmup",
        action="store_true",
        help="compile batch sizes on first use instead of at start",
    )
    parser.add_argument(
        "--connection-timeout",
        type=float,
        default=CONNECTION_TIMEOUT_S,
        help="seconds an idle or stalled connection may hold its thread",
    )
    parser.add_argument("--verbose", action="store_true", help="log every HTTP request")
    args = parser.parse_args(argv)
    start = time.time()
    try:
        rec = BundleRecommender.load(args.bundle, max_batch=args.max_batch)
    except BundleError as e:
        return report_error(e)
    if not args.no_warmup:
        rec.warmup(log=lambda m: print(m, file=sys.stderr, flush=True))
    service = RecommendService(rec, max_wait_ms=args.max_wait_ms, max_requests=args.max_requests)
    server = make_server(service, args.host, args.port, args.verbose, args.connection_timeout)
    host, port = server.server_address[:2]
    # Tests and scripts read this line to learn the port.
    print(
        f"serving {rec.num_items} items on http://{host}:{port} "
        f"(ready in {time.time() - start:.1f} s)",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
