"""`python -m recsys_jax.serve` over real HTTP on 127.0.0.1 (ephemeral port): answers,
4xx errors with messages, concurrent load that neither crashes nor mixes up answers, readiness,
the OpenAPI description, access-log lines, idle and half-open connections, graceful SIGTERM."""

import http.client
import json
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


def start_server(bundle, stderr_path, *extra):
    """-> (process, port) once the server listens; its stderr (warm-up messages and the JSON
    access log) goes to a file, which a pipe nobody reads would fill up and block."""
    cmd = [sys.executable, "-m", "recsys_jax.serve", "--bundle", str(bundle), "--port", "0"]
    with open(stderr_path, "w") as err:
        proc = subprocess.Popen([*cmd, *extra], stdout=subprocess.PIPE, stderr=err, text=True)
    line = proc.stdout.readline()  # blocks until the server listens (or has died)
    match = re.search(r"serving \d+ items on http://127\.0\.0\.1:(\d+)", line)
    if not match:
        proc.kill()
        proc.wait(30)
        pytest.fail(f"server did not start: {line!r} {stderr_path.read_text()[-3000:]}")
    return proc, int(match.group(1))


@pytest.fixture(scope="module")
def server(toy_bundle, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "stderr.log"
    proc, port = start_server(
        toy_bundle,
        log,
        *("--max-batch", "4", "--max-wait-ms", "5", "--max-requests", "8"),
        *("--connection-timeout", "2"),
    )
    # Requests sent before the warm-up compiles are done wait for them; /ready says when.
    deadline, ready = time.monotonic() + 300, []
    while time.monotonic() < deadline:
        ready.append(call(port, "GET", "/ready")[0])
        if ready[-1] == 200:
            break
        time.sleep(0.1)
    assert ready[-1] == 200 and set(ready) <= {200, 503}, ready
    yield proc, port, log
    proc.terminate()
    proc.wait(30)


def call(port, method, path, body=None, raw=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_health_and_a_valid_request(server):
    _, port, _ = server
    status, health = call(port, "GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["beam"] == 8
    status, out = call(port, "POST", "/recommend", {"history": ["1", "3"], "k": 5})
    assert status == 200 and len(out["items"]) == 5
    assert all(set(x) == {"id", "title", "score"} for x in out["items"])
    assert not {x["id"] for x in out["items"]} & {"1", "3"}
    status, batch = call(
        port,
        "POST",
        "/recommend",
        {"requests": [{"history": ["1", "3"], "k": 5}, {"history": ["7"]}]},
    )
    assert status == 200 and [len(r["items"]) for r in batch["results"]] == [5, 8]


@pytest.mark.parametrize(
    "method, path, body, raw, status, message",
    [
        ("POST", "/recommend", None, b'{"history": [', 400, "malformed JSON"),
        ("POST", "/recommend", {"history": ["no-such-item"]}, None, 422, "unknown item"),
        ("POST", "/recommend", {"history": ["1"], "k": 9}, None, 422, "between 1 and 8"),
        ("POST", "/recommend", {"history": ["1"], "k": 0}, None, 422, "between 1 and 8"),
        ("POST", "/recommend", {"requests": [{"history": ["1"]}] * 9}, None, 413, "at most 8"),
        ("POST", "/nope", {}, None, 404, "no route"),
        ("GET", "/recommend", None, None, 404, "no route"),
    ],
)
def test_bad_requests_get_4xx_with_a_message(server, method, path, body, raw, status, message):
    _, port, _ = server
    got, payload = call(port, method, path, body, raw)
    assert got == status and message in payload["error"], payload


def test_other_methods_and_garbage_get_json_errors(server):
    _, port, _ = server
    for method in ("PUT", "DELETE", "PATCH"):
        status, payload = call(port, method, "/recommend", {"history": ["1"]})
        assert status == 405 and "not allowed" in payload["error"]
    status, payload = call(port, "BREW", "/recommend")
    assert status == 501 and "Unsupported method" in payload["error"]
    for garbage in (b"complete garbage\r\n\r\n", b"GET / HTTP/9.x\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(garbage)
            answer = _read_all(sock)
        # A request line without a valid version gets HTTP/0.9's bare body: JSON, not HTML.
        assert "Bad" in json.loads(answer[answer.index(b"{") :])["error"], answer


def test_deeply_nested_json_is_a_400(server):
    _, port, _ = server
    raw = b'{"history": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, payload = call(port, "POST", "/recommend", raw=raw)
    assert status == 400 and "nested too deeply" in payload["error"]


def test_an_oversized_body_gets_its_413_not_a_reset(server):
    _, port, _ = server
    status, payload = call(port, "POST", "/recommend", raw=b"x" * (10 << 20))
    assert status == 413 and "at most" in payload["error"]


def test_a_stalled_connection_is_closed_after_the_timeout(server):
    _, port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        start = time.monotonic()
        assert _read_all(sock) == b""  # closed by the server, no answer to half a request
        assert time.monotonic() - start < 15  # --connection-timeout 2
    status, _ = call(port, "GET", "/health")  # and the server still answers
    assert status == 200


def _read_all(sock) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_200_concurrent_requests_from_8_threads_all_answered_correctly(server, toy_bundle):
    proc, port, _ = server
    ids = json.loads((toy_bundle / "catalog.json").read_text())["item_ids"][:40]
    rng = random.Random(0)
    histories = [rng.sample(ids, rng.randint(1, 4)) for _ in range(10)]
    expected = {}
    for h in histories:  # reference answers, one request at a time
        status, out = call(port, "POST", "/recommend", {"history": h, "k": 8})
        assert status == 200
        expected[tuple(h)] = out["items"]
    # Every 10th request is bad on purpose: errors must not disturb the good ones.
    jobs = [(histories[i % 10], 1 + i % 8, i % 10 == 9) for i in range(200)]
    results, latencies, lock = [None] * 200, [], threading.Lock()
    cursor = iter(range(200))

    def worker():
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                return
            h, k, bad = jobs[i]
            t0 = time.perf_counter()
            results[i] = call(
                port, "POST", "/recommend", {"history": h + (["zz-unknown"] if bad else []), "k": k}
            )
            with lock:
                latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    for (h, k, bad), (status, out) in zip(jobs, results):
        if bad:
            assert status == 422 and "zz-unknown" in out["error"]
            continue
        assert status == 200, out
        want = expected[tuple(h)][:k]
        assert [x["id"] for x in out["items"]] == [x["id"] for x in want]
        assert [x["score"] for x in out["items"]] == pytest.approx(
            [x["score"] for x in want], abs=1e-4
        )
    lat = sorted(latencies)
    print(
        f"\n200 requests / 8 threads: {200 / wall:.1f} req/s, p50 "
        f"{1000 * lat[100]:.1f} ms, p99 {1000 * lat[197]:.1f} ms"
    )
    status, health = call(port, "GET", "/health")
    assert status == 200 and proc.poll() is None  # still alive
    assert health["batches"] < health["batched_items"]  # requests were batched together


def test_ready_openapi_and_docs(server):
    _, port, _ = server
    assert call(port, "GET", "/ready") == (200, {"status": "ready"})
    status, schema = call(port, "GET", "/openapi.json")
    assert status == 200 and {"/recommend", "/health", "/ready"} <= set(schema["paths"])
    assert "RecommendRequest" in schema["components"]["schemas"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/docs")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/html")


def test_every_request_gets_a_json_access_log_line(server):
    _, port, log = server
    call(port, "POST", "/recommend", {"history": ["1", "3"], "k": 2})
    call(port, "GET", "/nope")
    time.sleep(0.2)
    records = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    assert {"time", "method", "path", "status", "latency_ms"} <= set(records[-1])
    assert [(r["method"], r["path"], r["status"]) for r in records[-2:]] == [
        ("POST", "/recommend", 200),
        ("GET", "/nope", 404),
    ]
    assert records[-2]["batch_size"] >= 1 and records[-2]["latency_ms"] > 0


def test_half_open_connections_block_nobody_and_are_closed(server):
    _, port, _ = server
    hanging = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(100)]
    for sock in hanging:
        sock.sendall(b"POST /recommend HT")  # a partial request line, then nothing
    start = time.monotonic()
    status, _ = call(port, "POST", "/recommend", {"history": ["1"], "k": 3})
    assert status == 200 and time.monotonic() - start < 10
    for sock in hanging:
        assert _read_all(sock) == b""  # closed after --connection-timeout 2
        sock.close()
    assert time.monotonic() - start < 15


def test_sigterm_finishes_the_request_in_flight_then_exits_0(toy_bundle, tmp_path):
    # No warm-up and a 1 s batching window: the request is still in flight at the signal.
    log = tmp_path / "stderr.log"
    proc, port = start_server(toy_bundle, log, "--no-warmup", "--max-wait-ms", "1000")
    answers = []
    client = threading.Thread(
        target=lambda: answers.append(call(port, "POST", "/recommend", {"history": ["1"]}))
    )
    try:
        client.start()
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        client.join(60)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert answers and answers[0][0] == 200 and len(answers[0][1]["items"]) == 8, answers
    err = log.read_text()
    assert "SIGTERM" in err and "stopped after answering 1 requests" in err, err[-2000:]


def test_a_corrupted_bundle_stops_the_server_at_start(toy_bundle, tmp_path):
    import shutil

    bundle = shutil.copytree(toy_bundle, tmp_path / "b")
    with open(bundle / "weights.npz", "r+b") as f:
        f.truncate(100)
    out = subprocess.run(
        [sys.executable, "-m", "recsys_jax.serve", "--bundle", str(bundle), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "weights.npz is truncated" in out.stderr
