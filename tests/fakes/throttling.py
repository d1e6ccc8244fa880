"""A provider with a capacity, served over loopback: it throttles what goes beyond it.

:class:`ThrottlingServer` answers ``GET /ping`` with 200 while its own token bucket (``capacity``
requests per second, ``burst`` at once) has a token, and with a throttling answer when it has
none, the way a provider's API gateway does. The throttling answer is one of the shapes janitor's
error models read as throttling (:mod:`janitor.http_errors`):

* ``"429"``: a bare 429 (every model);
* ``"glue"``: a 400 whose AWS JSON body says ``ThrottlingException`` (``AWS_JSON``);
* ``"huawei"``: a 400 whose body has the API gateway's ``APIG.0308`` (``HUAWEI``).

The server counts what it served and what it throttled; its capacity can change while it runs
(:meth:`ThrottlingServer.set_capacity`). It uses the real monotonic clock: it is a peer, and
tests read its counters, never its timing.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Self

Style = Literal["429", "glue", "huawei"]

_THROTTLED: dict[Style, tuple[int, dict[str, str]]] = {
    "429": (429, {"message": "Too Many Requests"}),
    "glue": (400, {"__type": "ThrottlingException", "message": "Rate exceeded"}),
    "huawei": (400, {"error_code": "APIG.0308", "error_msg": "The request is throttled."}),
}


class ThrottlingServer:
    """Answers ``capacity`` requests per second and throttles the rest; stop with :meth:`close`."""

    def __init__(self, capacity: float, *, burst: float = 4.0, style: Style = "429") -> None:
        self.style: Style = style
        self.served = 0
        self.throttled = 0
        self._capacity = capacity
        self._burst = burst
        self._tokens = burst
        self._updated = time.monotonic()
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="throttling")
        self.thread.start()

    @property
    def url(self) -> str:
        """The base URL to give a target."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def set_capacity(self, capacity: float, *, burst: float | None = None) -> None:
        """Serve ``capacity`` requests per second (and ``burst`` at once) from now on."""
        with self._lock:
            self._refill()
            self._capacity = capacity
            if burst is not None:
                self._burst = burst
                self._tokens = min(self._tokens, burst)

    def admit(self) -> bool:
        """Take a token for one request: True to serve it, False to throttle it."""
        with self._lock:
            self._refill()
            if self._tokens >= 1:
                self._tokens -= 1
                self.served += 1
                return True
            self.throttled += 1
            return False

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._capacity)
        self._updated = now

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _handler(server: ThrottlingServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like a real gateway

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/ping":
                self._answer(404, {"message": "no such path"})
            elif server.admit():
                self._answer(200, {"ok": True})
            else:
                status, body = _THROTTLED[server.style]
                self._answer(status, body)

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    return Handler
