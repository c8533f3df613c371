"""The HTTP layer (`recsys_jax/serving/api.py`) on a real uvicorn server in a thread, over a
stand-in recommender (no model, nothing to compile): readiness, the OpenAPI description,
access-log lines, JSON errors, idle and half-open connections, graceful stop."""

import contextlib
import http.client
import json
import socket
import sys
import threading
import time
from types import SimpleNamespace

from recsys_jax.serving import api
from recsys_jax.serving import schema as models
from recsys_jax.serving.requests import RecommendService


class StandIn:
    """What RecommendService needs of a BundleRecommender: items "0".."9", beam 4."""

    beam, max_batch, num_items = 4, 4, 10
    bundle = SimpleNamespace(manifest={"dtype": "float32", "created": "now"})

    def __init__(self):
        self.warm = threading.Event()  # warmup() waits for it
        self.go = threading.Event()  # run() waits for it
        self.go.set()

    def resolve(self, ref) -> int:
        if str(ref) not in {str(i) for i in range(self.num_items)}:
            raise ValueError(f"unknown item {ref!r}")
        return int(ref)

    def check_k(self, k, history_len, exclude_history=True):
        if not 1 <= k <= self.beam:
            raise ValueError(f"k={k!r} must be an integer between 1 and {self.beam}")

    def run(self, requests):
        assert self.go.wait(10)
        return [[(str(j), f"title {j}", -float(j)) for j in range(k)] for _, k, _ in requests]

    def warmup(self, log=None):
        assert self.warm.wait(10)


class Lines:
    def __init__(self):
        self.records = []

    def __call__(self, **fields):
        self.records.append(json.loads(json.dumps(fields)))  # must be JSON-serializable


@contextlib.contextmanager
def serving(warmup=False, connection_timeout=30.0):
    rec, log = StandIn(), Lines()
    service = RecommendService(rec, max_wait_ms=1, max_requests=3, warmup=warmup)
    server = api.make_server(
        api.create_app(service, access_log=log), connection_timeout=connection_timeout
    )
    sock = api.listen("127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield SimpleNamespace(
            port=sock.getsockname()[1], rec=rec, log=log, server=server, thread=thread
        )
    finally:
        rec.warm.set()
        rec.go.set()
        server.should_exit = True
        thread.join(10)
        service.close()


def call(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_ready_is_503_until_the_warmup_is_done_then_200():
    with serving(warmup=True) as s:
        status, body = call(s.port, "GET", "/ready")
        assert status == 503 and body["status"] == "warming up" and "error" in body
        assert call(s.port, "GET", "/health")[1]["ready"] is False  # alive, not ready
        s.rec.warm.set()
        deadline = time.monotonic() + 10
        while call(s.port, "GET", "/ready")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert call(s.port, "GET", "/ready") == (200, {"status": "ready"})
        assert call(s.port, "GET", "/health")[1]["ready"] is True


def test_answers_match_the_published_schema_and_every_request_is_logged():
    with serving() as s:
        status, published = call(s.port, "GET", "/openapi.json")
        assert status == 200 and {"/recommend", "/health", "/ready"} <= set(published["paths"])
        post = published["paths"]["/recommend"]["post"]
        body = post["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/RecommendBody"}
        assert {"RecommendRequest", "BatchRequest", "RecommendAnswer", "ErrorAnswer"} <= set(
            published["components"]["schemas"]
        )
        assert {"200", "400", "413", "422", "503"} <= set(post["responses"])
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        conn.request("GET", "/docs")
        docs = conn.getresponse()
        assert docs.status == 200 and b"openapi.json" in docs.read()

        single = {"history": ["1", 2], "k": 3}
        batch = {"requests": [single, {"history": ["4"]}]}
        models.RecommendBody.model_validate(single)
        models.RecommendBody.model_validate(batch)
        status, out = call(s.port, "POST", "/recommend", single)
        assert status == 200 and len(models.Recommendation.model_validate(out).items) == 3
        status, out = call(s.port, "POST", "/recommend", batch)
        assert status == 200 and len(models.BatchRecommendation.model_validate(out).results) == 2
        models.Health.model_validate(call(s.port, "GET", "/health")[1])
        for bad, code in [({"history": ["1"], "k": 9}, 422), ({"history": "1"}, 400)]:
            status, out = call(s.port, "POST", "/recommend", bad)
            assert status == code and models.ErrorAnswer.model_validate(out).error
        assert call(s.port, "DELETE", "/health")[0] == 405

    by_path = [(r["method"], r["path"], r["status"]) for r in s.log.records]
    assert by_path == [
        ("GET", "/openapi.json", 200),
        ("GET", "/docs", 200),
        ("POST", "/recommend", 200),
        ("POST", "/recommend", 200),
        ("GET", "/health", 200),
        ("POST", "/recommend", 422),
        ("POST", "/recommend", 400),
        ("DELETE", "/health", 405),
    ]
    assert all(r["latency_ms"] >= 0 and r["client"] == "127.0.0.1" for r in s.log.records)
    assert [r.get("batch_size") for r in s.log.records[2:4]] == [1, 2]


def test_a_bug_in_a_route_is_a_json_500_and_the_server_goes_on(monkeypatch, capsys):
    with serving() as s:
        monkeypatch.setattr(RecommendService, "health", lambda self: 1 / 0)
        status, out = call(s.port, "GET", "/health")
        assert status == 500 and "ZeroDivisionError" in out["error"]
        assert call(s.port, "GET", "/ready")[0] == 200
    assert "ZeroDivisionError" in capsys.readouterr().err  # the traceback, for the operator
    assert s.log.records[0]["status"] == 500


def test_idle_and_half_open_connections_are_closed_and_starve_nothing():
    with serving(connection_timeout=1.0) as s:
        idle = []
        for i in range(100):
            sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
            if i % 2:
                sock.sendall(b"GET /hea")  # half a request line, then nothing
            idle.append(sock)
        start = time.monotonic()
        assert call(s.port, "POST", "/recommend", {"history": ["1"], "k": 2})[0] == 200
        assert time.monotonic() - start < 1.0  # answered while 100 connections hang
        for sock in idle:
            assert sock.recv(100) == b""  # closed by the server, no answer
        assert time.monotonic() - start < 5.0
        for sock in idle:
            sock.close()
        # a request whose body never arrives is closed too, without an answer
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
            sock.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
            assert sock.recv(100) == b""


def test_stopping_lets_the_request_in_flight_finish():
    with serving() as s:
        s.rec.go.clear()  # the model call blocks until go is set
        answers = []
        client = threading.Thread(
            target=lambda: answers.append(
                call(s.port, "POST", "/recommend", {"history": ["1"], "k": 2})
            )
        )
        client.start()
        time.sleep(0.3)
        s.server.should_exit = True  # what SIGTERM does
        time.sleep(0.3)
        assert s.thread.is_alive()  # still waiting for the request in flight
        s.rec.go.set()
        client.join(10)
        s.thread.join(10)
        assert not s.thread.is_alive()
    assert answers and answers[0][0] == 200 and len(answers[0][1]["items"]) == 2


def test_without_fastapi_the_command_says_what_to_install(monkeypatch, capsys):
    from recsys_jax import serve, serving

    monkeypatch.setitem(sys.modules, "fastapi", None)  # `import fastapi` fails
    monkeypatch.delitem(sys.modules, "recsys_jax.serving.api")
    monkeypatch.delattr(serving, "api")
    assert serve.main(["--bundle", "nowhere"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install -e ".[serve]"' in err, err
