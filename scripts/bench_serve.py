"""Serving load test: start `recsys_jax.serve` on a bundle, fire --requests POSTs at /recommend
from --clients concurrent clients while --half-open sockets hang on the server, and print one
JSON object (requests/s, p50/p99 latency, errors, mean micro-batch, the server's RSS, open
file descriptors and threads over time).

    python scripts/bench_serve.py --bundle bundles/default              # 2000 requests,
                                                                        # 200 clients, 300 half-open
    python scripts/bench_serve.py --checkpoint runs/smoke               # exports a bundle first
    python scripts/bench_serve.py --bundle B --clients 8 --half-open 0 --requests 200
    python scripts/bench_serve.py --bundle B --server-cmd "python -m recsys_jax.serve" \\
        --server-cwd /path/to/another/checkout                          # another version's server

Clients: each request is a new HTTP connection carrying a random history (1-5 catalog items,
seeded); every answer is checked (status 200 and 1..k distinct items: beam search may finish
fewer than k when k is close to the beam), and any error makes the exit status 1. Half-open
sockets connect and send a partial request line, then nothing; one the server closes is opened
again at once, so --half-open of them hang on the server for the whole run.

The server runs in its own process on 127.0.0.1 with its defaults unless --max-batch /
--max-wait-ms say otherwise; timing starts once its batch sizes are compiled (GET /ready is
200, or the server has no /ready) and one untimed request is answered. Its resident memory
(VmRSS in /proc/PID/status) is sampled when it listens, after the warm-up, and every
--rss-every answered requests; `rss_growth_mb` is the growth over the last 1,500 requests (or
the whole run when shorter). The server must still be alive at the end; it is then stopped with
SIGTERM and its exit code reported.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import re
import selectors
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

GROWTH_WINDOW = 1500  # requests


def start_server(cmd: list[str], cwd: str | None, timeout: float = 600):
    """-> (process, port, seconds to listen). Reads the 'serving ... on http://host:port'
    line."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    start = time.time()
    for line in proc.stdout:
        match = re.search(r"http://[^\s:]+:(\d+)", line)
        if match:
            # Keep draining stdout so the server never blocks on a full pipe.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, int(match.group(1)), time.time() - start
        if time.time() - start > timeout:
            break
    proc.kill()
    raise RuntimeError(f"server did not start (exit code {proc.poll()})")


def request(port: int, method: str, path: str, body: dict | None = None, timeout=300):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, {"raw": raw[:200].decode("latin-1")}
    finally:
        conn.close()


def wait_ready(port: int, timeout: float = 600) -> str:
    """Poll GET /ready until 200; a server without /ready (404) is ready once it listens."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, _ = request(port, "GET", "/ready")
        if status == 200:
            return "GET /ready 200"
        if status == 404:
            return "no /ready route; ready when listening"
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {timeout:.0f} s")


def proc_status(pid: int) -> dict:
    """The server's resident memory (MB), threads and open file descriptors, from /proc."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_mb"] = round(int(line.split()[1]) / 1024, 1)
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
        out["open_fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    return out


class HalfOpen:
    """`n` sockets that each sent a partial request line and then nothing; one the server
    closes (or answers) is replaced at once."""

    PARTIAL = b"POST /recommend HT"

    def __init__(self, port: int, n: int):
        self.port, self.n = port, n
        self.selector = selectors.DefaultSelector()
        self.closed_by_server = 0
        self.answered_by_server = 0
        self.connect_errors = 0
        self.opened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> HalfOpen:
        for _ in range(self.n):
            self._open()
        self._thread.start()
        return self

    def _open(self) -> None:
        while not self._stop.is_set():
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                sock.sendall(self.PARTIAL)
            except OSError:
                self.connect_errors += 1
                time.sleep(0.1)
                continue
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
            self.opened += 1
            return

    def _loop(self) -> None:
        while not self._stop.is_set():
            for key, _ in self.selector.select(timeout=0.2):
                sock = key.fileobj
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    self.answered_by_server += 1
                self.closed_by_server += 1
                self.selector.unregister(sock)
                sock.close()
                self._open()

    def held(self) -> int:
        return len(self.selector.get_map())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()
        self.selector.close()


def machine() -> dict:
    info = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu"] = re.search(r"model name\s*:\s*(.*)", cpuinfo).group(1)
        meminfo = Path("/proc/meminfo").read_text()
        info["memory_gb"] = round(int(re.search(r"MemTotal:\s*(\d+)", meminfo).group(1)) / 2**20)
    except (OSError, AttributeError):
        pass
    return info


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", help="bundle folder")
    source.add_argument("--checkpoint", help="run dir: export a bundle to a temp dir first")
    parser.add_argument("--requests", type=int, default=2000, help="timed requests in all")
    parser.add_argument(
        "--clients", "--threads", dest="clients", type=int, default=200, help="concurrent clients"
    )
    parser.add_argument(
        "--half-open", type=int, default=300, help="sockets hanging on a partial request line"
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--rss-every", type=int, default=200, help="sample RSS every N answers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--server-cmd",
        default=f"{shlex.quote(sys.executable)} -m recsys_jax.serve",
        help="how to start the server (the bundle, port and batching flags are appended)",
    )
    parser.add_argument(
        "--server-cwd",
        default=None,
        help="the server's working directory: with `python -m`, the checkout it imports first",
    )
    args = parser.parse_args()

    tmp = None
    bundle = Path(args.bundle).resolve() if args.bundle else None
    if bundle is None:
        tmp = tempfile.TemporaryDirectory()
        bundle = Path(tmp.name) / "bundle"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "recsys_jax.export",
                "--checkpoint",
                args.checkpoint,
                "--out",
                str(bundle),
                "--platforms",
                "cpu,cuda,tpu",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    item_ids = json.loads((bundle / "catalog.json").read_text())["item_ids"]
    beam = json.loads((bundle / "recommend.json").read_text())["decoding"]["beam"]
    k = min(args.k, beam)
    rng = random.Random(args.seed)
    bodies = [
        {"history": rng.sample(item_ids, rng.randint(1, 5)), "k": k} for _ in range(args.requests)
    ]
    cmd = shlex.split(args.server_cmd) + [
        *("--bundle", str(bundle), "--port", "0"),
        *("--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)),
    ]
    info = machine()

    started = time.time()
    proc, port, listen_s = start_server(cmd, args.server_cwd)
    samples = [{"at": "listening", "requests": 0, **proc_status(proc.pid)}]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    jobs = iter(range(args.requests))
    half_open = None
    growth_from = args.requests - GROWTH_WINDOW  # the sample rss_growth_mb starts from

    def worker():
        while True:
            with lock:
                i = next(jobs, None)
            if i is None:
                return
            t0 = time.perf_counter()
            try:
                status, payload = request(port, "POST", "/recommend", bodies[i])
            except (OSError, http.client.HTTPException) as e:
                status, payload = None, {"exception": f"{type(e).__name__}: {e}"}
            dt = time.perf_counter() - t0
            # Beam search may finish fewer than k items (never more, never duplicates).
            ids = [x["id"] for x in payload.get("items", [])]
            ok = status == 200 and 1 <= len(ids) == len(set(ids)) <= k
            with lock:
                latencies.append(dt)
                if not ok:
                    errors.append(f"{status}: {str(payload)[:300]}")
                done = len(latencies)
            if done % args.rss_every == 0 or done in (args.requests, growth_from):
                sample = {"at": "load", "requests": done, **proc_status(proc.pid)}
                if half_open is not None:
                    sample["half_open_held"] = half_open.held()
                with lock:
                    samples.append(sample)

    try:
        readiness = wait_ready(port)
        request(port, "POST", "/recommend", bodies[0])  # one untimed request
        startup = time.time() - started
        samples.append({"at": "warmed up", "requests": 0, **proc_status(proc.pid)})
        before = request(port, "GET", "/health")[1]
        if args.half_open:
            half_open = HalfOpen(port, args.half_open).start()
        wall = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - wall
        alive = proc.poll() is None
        health = request(port, "GET", "/health")[1] if alive else {}
        held_at_end = half_open.held() if half_open else 0
    finally:
        if half_open is not None:
            half_open.stop()
        exit_code = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                exit_code = proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                exit_code = "killed after 60 s"
        if tmp:
            tmp.cleanup()
    lat = sorted(latencies)
    pct = lambda q: 1000 * lat[min(len(lat) - 1, int(q * len(lat)))]
    batches = health.get("batches", 0) - before["batches"]
    load = [s for s in samples if s["at"] == "load" and "rss_mb" in s]
    base = [s for s in load if s["requests"] <= args.requests - GROWTH_WINDOW]
    base = base[-1] if base else next(s for s in samples if s["at"] == "warmed up")
    growth = round(load[-1]["rss_mb"] - base["rss_mb"], 1) if load else None
    if not alive:
        errors.append(f"the server died during the run (exit code {proc.returncode})")
    print(
        json.dumps(
            {
                "bundle": str(args.bundle or args.checkpoint),
                "server_cmd": " ".join(cmd[: len(shlex.split(args.server_cmd))]),
                "server_cwd": args.server_cwd or os.getcwd(),
                "items": len(item_ids),
                "beam": beam,
                "k": k,
                "requests": args.requests,
                "clients": args.clients,
                "half_open": args.half_open,
                "errors": len(errors),
                "requests_per_s": round(args.requests / wall, 2),
                "p50_ms": round(pct(0.50), 1),
                "p99_ms": round(pct(0.99), 1),
                "mean_ms": round(1000 * sum(lat) / len(lat), 1),
                "max_ms": round(1000 * lat[-1], 1),
                "wall_s": round(wall, 1),
                "mean_batch": round(
                    (health.get("batched_items", 0) - before["batched_items"]) / max(1, batches),
                    2,
                ),
                "max_batch": args.max_batch,
                "max_wait_ms": args.max_wait_ms,
                "server_listen_s": round(listen_s, 1),
                "server_startup_s": round(startup, 1),
                "readiness": readiness,
                "server_alive_at_end": alive,
                "server_exit_code_after_sigterm": exit_code,
                "rss_mb": [s.get("rss_mb") for s in samples],
                "rss_growth_mb": growth,
                "rss_growth_over_requests": load[-1]["requests"] - base["requests"]
                if load
                else None,
                "samples": samples,
                "half_open_held_at_end": held_at_end,
                "half_open_closed_by_server": half_open.closed_by_server if half_open else 0,
                "half_open_answered_by_server": half_open.answered_by_server if half_open else 0,
                "half_open_connect_errors": half_open.connect_errors if half_open else 0,
                **info,
                "first_errors": errors[:3],
            },
            indent=2,
        )
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
