"""JSON-over-HTTP recommendations from an exported bundle: `python -m recsys_jax.serve`.

    pip install -e ".[serve]"      # FastAPI and uvicorn
    python -m recsys_jax.serve --bundle bundles/default --port 8080
    curl -s localhost:8080/ready
    curl -s -X POST localhost:8080/recommend -d '{"history": ["B004756YJA"], "k": 5}'

POST /recommend takes {"history": [...], "k": 10} or {"requests": [...]} (schema and error
codes in `recsys_jax/serving/requests.py`, OpenAPI at /docs and /openapi.json); GET /health
reports liveness, the bundle and counters; GET /ready answers 503 until the padded batch
sizes are compiled, then 200. Every answer is JSON; errors are {"error": "..."}. Listens on
127.0.0.1 unless --host says otherwise: there is no authentication.

FastAPI on uvicorn (`recsys_jax/serving/api.py`): one asyncio event loop holds every
connection, so idle or half-open connections cost no thread, and each is closed after
--connection-timeout seconds without data. Concurrent requests are merged into micro-batches
(--max-batch, --max-wait-ms) on the single model thread. Bodies over 1 MiB get a 413. One JSON
access-log line per request goes to stderr. SIGTERM (or Ctrl-C) stops accepting connections,
lets the requests in flight and their micro-batch finish, then exits 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from recsys_jax.cli import report_error
from recsys_jax.serving.bundle import BundleError
from recsys_jax.serving.recommender import BundleRecommender
from recsys_jax.serving.requests import RecommendService

CONNECTION_TIMEOUT_S = 30.0  # also in serving/api.py, which needs the optional packages
SHUTDOWN_TIMEOUT_S = 30.0
SERVE_PACKAGES = {"fastapi", "uvicorn", "starlette", "pydantic", "pydantic_core", "h11", "anyio"}


class MissingPackages(RuntimeError):
    """FastAPI or uvicorn is not installed."""


def _http_layer():
    """recsys_jax.serving.api, or MissingPackages naming the install command."""
    try:
        from recsys_jax.serving import api
    except ImportError as e:
        if (e.name or "").split(".")[0] not in SERVE_PACKAGES:
            raise
        raise MissingPackages(
            f"the HTTP server needs FastAPI and uvicorn ({e.name} is not installed): "
            'pip install -e ".[serve]"'
        ) from None
    return api


def _raise_open_files_limit() -> None:
    """Every connection is a file descriptor: allow as many as the hard limit permits."""
    try:
        import resource  # POSIX only

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass


def build_parser() -> argparse.ArgumentParser:
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
        help="compile batch sizes on first use instead of at start (GET /ready is 200 at once)",
    )
    parser.add_argument(
        "--connection-timeout",
        type=float,
        default=CONNECTION_TIMEOUT_S,
        help="seconds a connection may stay idle, or stall inside a request, before it is closed",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=SHUTDOWN_TIMEOUT_S,
        help="on SIGTERM, seconds the requests in flight get to finish before they are cancelled",
    )
    parser.add_argument(
        "--no-access-log", action="store_true", help="no JSON line per request on stderr"
    )
    parser.add_argument("--verbose", action="store_true", help="uvicorn's own info messages too")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.time()
    try:
        api = _http_layer()
    except MissingPackages as e:
        return report_error(e)
    try:
        rec = BundleRecommender.load(args.bundle, max_batch=args.max_batch)
    except BundleError as e:
        return report_error(e)
    try:
        sock = api.listen(args.host, args.port)
    except OSError as e:
        return report_error(OSError(f"cannot listen on {args.host}:{args.port}: {e.strerror}"))
    _raise_open_files_limit()
    log = lambda m: print(m, file=sys.stderr, flush=True)
    # The warm-up compiles run on the batcher thread while the server starts; requests that
    # arrive meanwhile wait for them, and GET /ready says when they are done.
    service = RecommendService(
        rec,
        max_wait_ms=args.max_wait_ms,
        max_requests=args.max_requests,
        warmup=not args.no_warmup,
        log=log,
    )
    app = api.create_app(service, access_log=None if args.no_access_log else api.AccessLog())
    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def started() -> None:
        # Tests and scripts read this line to learn the port.
        state = "ready" if service.ready else "compiling batch sizes; GET /ready says when done"
        print(
            f"serving {rec.num_items} items on {url} "
            f"(listening after {time.time() - start:.1f} s; {state})",
            flush=True,
        )

    server = api.make_server(
        app,
        connection_timeout=args.connection_timeout,
        shutdown_timeout=args.shutdown_timeout,
        verbose=args.verbose,
        on_started=started,
    )
    try:
        api.run(server, sock)
    finally:
        service.close()
    log(f"[serve] stopped after answering {service.answered} requests ({service.failed} errors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
