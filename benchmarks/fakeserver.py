"""A simulated Jupyter server in its own process, for the fleet benchmarks.

``python -m benchmarks.fakeserver --sessions N [--idle-every K] [--latency S] [--rate R]``
fills a :class:`~janitor.sim.jupyter.JupyterSim` (every K-th session idle for 3 hours, the
others active 5 minutes ago; with ``--half-idle``: half idle, a quarter recent, a quarter
busy), serves it over HTTP on loopback and prints one JSON line on stdout: its ``url`` and
how many sessions are idle. It serves until its stdin closes (the benchmark exits or closes
the pipe).

Every answer is delayed by ``--latency`` seconds (in the request's own thread, so concurrent
requests overlap like on a real network). Above ``--rate`` requests per second (a token
bucket holding one second of requests) it answers 429 with a ``Retry-After`` in whole
seconds, like a throttling API gateway. ``GET /_bench/stats`` (no auth, not counted, not
delayed) answers how many DELETEs it served per id, how many requests it throttled and how
long it spent building and sending listings.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from janitor.sim.jupyter import JupyterSim, send_json

STATS_PATH = "/_bench/stats"
LISTINGS = ("/api/kernels", "/api/sessions")


class Throttle:
    """A token bucket of ``rate`` requests per second holding ``rate`` tokens (0: no limit)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.updated = time.monotonic()
        self.lock = threading.Lock()
        self.throttled = 0

    def admit(self) -> float:
        """0.0 when the request may go on, else the seconds until a token is free."""
        if self.rate <= 0:
            return 0.0
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            self.throttled += 1
            return (1 - self.tokens) / self.rate


class FakeServer:
    """The simulator plus latency, throttling and the counters the benchmark reads."""

    def __init__(self, sim: JupyterSim, *, latency: float, rate: float) -> None:
        self.sim = sim
        self.latency = latency
        self.throttle = Throttle(rate)
        self.listing_seconds = 0.0
        self.lock = threading.Lock()

    def stats(self) -> dict[str, Any]:
        """What the benchmark checks: DELETEs per id, throttled requests, listing time."""
        with self.sim.lock:
            deletes = dict(self.sim.deletes)
            requests = len(self.sim.requests)
        return {
            "deletes": deletes,
            "requests": requests,
            "throttled": self.throttle.throttled,
            "listing_seconds": round(self.listing_seconds, 6),
        }

    def answer(
        self, method: str, url: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body of one request."""
        wait = self.throttle.admit()
        if self.latency:
            time.sleep(self.latency)
        if wait > 0:
            body = json.dumps({"message": "Too Many Requests"}).encode()
            return 429, {"Retry-After": str(max(1, math.ceil(wait)))}, body
        started = time.perf_counter()
        response = self.sim.handle_url(method, url, headers)
        body = response.content()
        if method == "GET" and url.split("?", 1)[0] in LISTINGS:
            with self.lock:
                self.listing_seconds += time.perf_counter() - started
        return response.status, response.headers, body


def populate(sim: JupyterSim, n: int, *, idle_every: int, half_idle: bool) -> int:
    """Add ``n`` sessions; return how many are idle past the benchmarks' policies (3 hours)."""
    idle = 0
    for i in range(n):
        if (half_idle and i % 4 in (0, 1)) or (not half_idle and i % idle_every == 0):
            sim.add_session(f"work/idle-{i}.ipynb", idle_for=timedelta(hours=3))
            idle += 1
        elif half_idle and i % 4 == 3:
            sim.add_session(f"work/train-{i}.ipynb", state="busy", idle_for=timedelta(hours=5))
        else:
            sim.add_session(f"work/recent-{i}.ipynb", idle_for=timedelta(minutes=5))
    return idle


def _handler(fake: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out at once, no delayed-ACK stall

        def send_response(self, code: int, message: str | None = None) -> None:
            """No Date header of its own: the simulator sends one."""
            self.send_response_only(code, message)

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            if self.path == STATS_PATH:
                send_json(self, 200, {}, json.dumps(fake.stats()).encode())
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            send_json(self, *fake.answer(self.command, self.path, headers))

        do_GET = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def main(argv: Sequence[str] | None = None) -> int:
    """Build, serve, print the address, serve until stdin closes."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fakeserver")
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--idle-every", type=int, default=10)
    parser.add_argument("--half-idle", action="store_true")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s, 0: no limit")
    parser.add_argument("--token", default="bench-token")
    args = parser.parse_args(argv)
    sim = JupyterSim(token=args.token)
    idle = populate(sim, args.sessions, idle_every=args.idle_every, half_idle=args.half_idle)
    fake = FakeServer(sim, latency=args.latency, rate=args.rate)
    server = _Server(("127.0.0.1", 0), _handler(fake))
    threading.Thread(target=server.serve_forever, name="fake-jupyter", daemon=True).start()
    host, port = server.server_address[:2]
    print(json.dumps({"url": f"http://{host!s}:{port}/", "idle": idle}), flush=True)
    sys.stdin.read()  # until the benchmark closes the pipe or exits
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
