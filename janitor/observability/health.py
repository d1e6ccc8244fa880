"""Health state and the HTTP server for ``/healthz``, ``/readyz`` and ``/metrics``.

``/healthz`` (liveness) says the event loop is alive and no sweep overran its timeout; it never
depends on the database or providers (an outage must not cause restart storms). ``/readyz``
adds: the database reachable with a current schema, and no target failing for longer than
``failing_target_after``. The server runs in a thread so a wedged loop still gets answered
(with 503).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from janitor import metrics

log = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


@dataclass
class Health:
    """Shared between the event loop (writer) and the HTTP thread (reader)."""

    heartbeat_period: float = 1.0
    failing_after: float = 900.0
    heartbeat: float = field(default_factory=time.monotonic)
    sweep_started: float | None = None
    sweep_timeout: float = 600.0
    db_ok: bool = False
    db_problem: str = "database not checked yet"
    failing_since: dict[str, float] = field(default_factory=dict)
    stopping: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def beat(self) -> None:
        """Called by the loop every heartbeat period."""
        self.heartbeat = time.monotonic()

    def liveness(self) -> tuple[bool, list[str]]:
        """(alive, problems): loop heartbeat fresh and no sweep past its timeout."""
        now = time.monotonic()
        problems = []
        if now - self.heartbeat > 3 * self.heartbeat_period + 2:
            problems.append(f"event loop stalled for {now - self.heartbeat:.0f}s")
        started = self.sweep_started
        if started is not None and now - started > self.sweep_timeout:
            problems.append(f"sweep running for {now - started:.0f}s, past its timeout")
        return not problems, problems

    def readiness(self) -> tuple[bool, list[str]]:
        """(ready, problems): alive, database usable, no target failing for too long."""
        alive, problems = self.liveness()
        if self.stopping:
            problems.append("shutting down")
        if not self.db_ok:
            problems.append(self.db_problem)
        now = time.monotonic()
        with self.lock:
            for target, since in sorted(self.failing_since.items()):
                if now - since > self.failing_after:
                    problems.append(f"target {target} failing for {now - since:.0f}s")
        return alive and not problems, problems

    def target_result(self, target: str, ok: bool) -> None:
        """Record whether a target's sweep succeeded."""
        with self.lock:
            if ok:
                self.failing_since.pop(target, None)
            else:
                self.failing_since.setdefault(target, time.monotonic())


def wsgi_app(health: Health) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The WSGI application serving the three endpoints."""
    metrics_app = make_wsgi_app(metrics.REGISTRY)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path in ("/healthz", "/readyz"):
            ok, problems = health.liveness() if path == "/healthz" else health.readiness()
            body = json.dumps({"ok": ok, "problems": problems}).encode()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(
                status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            )
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s", format % args)


class HealthServer:
    """Serves the endpoints on ``listen`` (HOST:PORT) from a daemon thread."""

    def __init__(self, listen: str, health: Health) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        self.server = make_server(
            host, int(port), wsgi_app(health), server_class=_Server, handler_class=_QuietHandler
        )
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="janitor-http", daemon=True
        )

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self.server.server_address[1])

    def start(self) -> None:
        """Start serving."""
        self.thread.start()
        log.info(
            "serving /healthz /readyz /metrics on %s:%d", self.server.server_address[0], self.port
        )

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
