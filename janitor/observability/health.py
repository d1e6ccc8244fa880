"""Health state and the HTTP server for ``/healthz``, ``/readyz`` and ``/metrics``.

``/healthz`` (liveness) says the event loop is alive and no sweep is stuck; it never depends
on the database or providers (an outage must not cause restart storms). A sweep is *stuck*
when it is still running ``overrun_grace`` seconds after its ``sweep_timeout``: the daemon
cancels a sweep at its timeout, so a sweep that outlives the cancellation (a hung database
call, a wedged thread) means the process needs a restart. The same check gates systemd's
``WATCHDOG=1``.

``/readyz`` adds: not shutting down, the database reachable with a current schema, and no
target failing for longer than ``failing_after``. It is for systemd, load balancers and
people, not for a sidecar's readiness probe (DESIGN 5).

The server runs in a thread, so a wedged loop still gets answered (with 503).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from janitor import metrics
from janitor.errors import ConfigError

log = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass
class Health:
    """Shared between the event loop (writer) and the HTTP thread (reader)."""

    heartbeat_period: float = 1.0
    failing_after: float = 900.0
    heartbeat: float = field(default_factory=time.monotonic)
    sweep_started: float | None = None
    sweep_timeout: float = 600.0
    overrun_grace: float = 10.0
    db_ok: bool = False
    db_problem: str = "database not checked yet"
    failing_since: dict[str, float] = field(default_factory=dict)
    stopping: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def beat(self) -> None:
        """Called by the loop every heartbeat period."""
        self.heartbeat = time.monotonic()

    def liveness(self) -> tuple[bool, list[str]]:
        """(alive, problems): loop heartbeat fresh and no sweep stuck past its timeout."""
        now = time.monotonic()
        problems = []
        stalled = now - self.heartbeat
        if stalled > 3 * self.heartbeat_period + 2:
            problems.append(f"event loop stalled for {stalled:.0f}s")
        started = self.sweep_started
        if started is not None and now - started > self.sweep_timeout + self.overrun_grace:
            problems.append(
                f"sweep running for {now - started:.0f}s: past its timeout of "
                f"{self.sweep_timeout:.0f}s and not ending after cancellation"
            )
        return not problems, problems

    def readiness(self) -> tuple[bool, list[str]]:
        """(ready, problems): alive, not stopping, database usable, no target failing long."""
        _, problems = self.liveness()
        if self.stopping:
            problems.append("shutting down")
        if not self.db_ok:
            problems.append(self.db_problem)
        now = time.monotonic()
        with self.lock:
            for target, since in sorted(self.failing_since.items()):
                if now - since > self.failing_after:
                    problems.append(f"target {target} failing for {now - since:.0f}s")
        return not problems, problems

    def target_result(self, target: str, ok: bool) -> None:
        """Record whether a target's sweep succeeded."""
        with self.lock:
            if ok:
                self.failing_since.pop(target, None)
            else:
                self.failing_since.setdefault(target, time.monotonic())


def wsgi_app(health: Health) -> WsgiApp:
    """The WSGI application serving the three endpoints (GET and HEAD only)."""
    metrics_app = make_wsgi_app(metrics.REGISTRY)
    checks = {"/healthz": health.liveness, "/readyz": health.readiness}

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path not in checks and path != "/metrics":
            return _plain(start_response, "404 Not Found", b"not found\n")
        if method not in ("GET", "HEAD"):
            return _plain(start_response, "405 Method Not Allowed", b"use GET\n", allow=True)
        if path == "/metrics":
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        ok, problems = checks[path]()
        body = json.dumps({"ok": ok, "problems": problems}).encode()
        start_response(
            "200 OK" if ok else "503 Service Unavailable",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [b""] if method == "HEAD" else [body]

    return app


def _plain(
    start_response: StartResponse, status: str, body: bytes, *, allow: bool = False
) -> list[bytes]:
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    if allow:
        headers.append(("Allow", "GET, HEAD"))
    start_response(status, headers)
    return [body]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s", format % args)


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` → (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class HealthServer:
    """Serves the endpoints on ``listen`` (HOST:PORT, ``[::]:PORT`` for IPv6) from a thread.

    Raises:
        ConfigError: the address cannot be bound (in use, or not an address of this host).
    """

    def __init__(self, listen: str, health: Health) -> None:
        host, port = parse_listen(listen)
        server_class = _Server6 if ":" in host else _Server
        try:
            self.server = make_server(
                host, port, wsgi_app(health), server_class=server_class, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise ConfigError(
                f"listen = {listen!r}: cannot serve /healthz /readyz /metrics there: "
                f"{exc.strerror or exc}"
            ) from None
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
            "serving /healthz /readyz /metrics on %s port %d",
            self.server.server_address[0],
            self.port,
        )

    def stop(self) -> None:
        """Stop serving and close the socket (also when never started)."""
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join()
        self.server.server_close()
