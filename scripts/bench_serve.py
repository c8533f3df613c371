"""Serving throughput and latency: start `recsys_jax.serve` on a bundle, fire N requests from
T threads at /recommend, print JSON (requests/s, p50/p99 latency, mean micro-batch size).

    python scripts/bench_serve.py --bundle bundles/default --requests 200 --threads 8
    python scripts/bench_serve.py --checkpoint runs/smoke --requests 200  # exports first

Histories are random catalog items (1-5 per request, seeded). Every answer is checked: status
200 and 1..k distinct items (beam search may finish fewer than k when k is close to the
beam). The server runs in its own process on 127.0.0.1 with its defaults unless --max-batch /
--max-wait-ms say otherwise; its batch sizes are compiled before timing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def start_server(bundle: Path, max_batch: int, max_wait_ms: float, timeout: float = 600):
    """-> (process, port). Reads the 'serving ... on http://host:port' line."""
    cmd = [
        sys.executable,
        "-m",
        "recsys_jax.serve",
        "--bundle",
        str(bundle),
        "--port",
        "0",
        "--max-batch",
        str(max_batch),
        "--max-wait-ms",
        str(max_wait_ms),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + timeout
    for line in proc.stdout:
        match = re.search(r"http://[^\s:]+:(\d+)", line)
        if match:
            return proc, int(match.group(1))
        if time.time() > deadline:
            break
    proc.kill()
    raise RuntimeError(f"server did not start (exit code {proc.poll()})")


def request(port: int, method: str, path: str, body: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", help="bundle folder")
    source.add_argument("--checkpoint", help="run dir: export a bundle to a temp dir first")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tmp = None
    bundle = Path(args.bundle) if args.bundle else None
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

    started = time.time()
    proc, port = start_server(bundle, args.max_batch, args.max_wait_ms)
    startup = time.time() - started
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    jobs = iter(range(args.requests))

    def worker():
        while True:
            with lock:
                i = next(jobs, None)
            if i is None:
                return
            t0 = time.perf_counter()
            status, payload = request(port, "POST", "/recommend", bodies[i])
            dt = time.perf_counter() - t0
            # Beam search may finish fewer than k items (never more, never duplicates).
            ids = [x["id"] for x in payload.get("items", [])]
            ok = status == 200 and 1 <= len(ids) == len(set(ids)) <= k
            with lock:
                latencies.append(dt)
                if not ok:
                    errors.append(f"{status}: {payload}")

    try:
        request(port, "POST", "/recommend", bodies[0])  # one untimed request
        before = request(port, "GET", "/health")[1]
        wall = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(args.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - wall
        health = request(port, "GET", "/health")[1]
    finally:
        proc.terminate()
        proc.wait(30)
        if tmp:
            tmp.cleanup()
    lat = sorted(latencies)
    pct = lambda q: 1000 * lat[min(len(lat) - 1, int(q * len(lat)))]
    batches = health["batches"] - before["batches"]
    print(
        json.dumps(
            {
                "bundle": str(args.bundle or args.checkpoint),
                "items": len(item_ids),
                "beam": beam,
                "k": k,
                "requests": args.requests,
                "threads": args.threads,
                "errors": len(errors),
                "requests_per_s": round(args.requests / wall, 1),
                "p50_ms": round(pct(0.50), 1),
                "p99_ms": round(pct(0.99), 1),
                "mean_ms": round(1000 * sum(lat) / len(lat), 1),
                "mean_batch": round(
                    (health["batched_items"] - before["batched_items"]) / max(1, batches), 2
                ),
                "max_batch": args.max_batch,
                "max_wait_ms": args.max_wait_ms,
                "server_startup_s": round(startup, 1),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                "first_errors": errors[:3],
            },
            indent=2,
        )
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
