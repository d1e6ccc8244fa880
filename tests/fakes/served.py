"""Fakes served over loopback, for tests that run janitor as a real process.

* :class:`HookedSim` is the simulated Jupyter server with hooks: the first requests that match
  a hook run its ``before`` callback in the server's handler thread, while janitor waits for
  the answer. A test lands an event (``janitor pause``, SIGTERM, a sweep timeout) at that
  exact point of a sweep, with no sleep; ``answer`` may replace the simulator's response.
* :class:`ServedWebhook` records the JSON POSTs janitor's webhook channel sends (warnings and
  alerts), like :class:`tests.fakes.webhook.WebhookReceiver` but over real HTTP.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from janitor.sim.jupyter import JupyterSim, Response

_ID = r"[\w-]+"


def listing(method: str, path: str) -> bool:
    """The listing of sessions: ``GET api/sessions``."""
    return method == "GET" and re.search(r"/api/sessions/?$", path) is not None


def recheck(method: str, path: str) -> bool:
    """The re-read of one session: ``GET api/sessions/{id}``."""
    return method == "GET" and re.search(rf"/api/sessions/{_ID}$", path) is not None


def delete(method: str, path: str) -> bool:
    """A destructive call: ``DELETE api/sessions/{id}`` or ``api/kernels/{id}``."""
    return method == "DELETE"


@dataclass
class Hook:
    """What happens on the first ``times`` requests that ``when(method, path)`` matches."""

    when: Callable[[str, str], bool]
    before: Callable[[], None] | None = None
    answer: Callable[[Response], Response] | None = None  # rewrites the simulator's answer
    times: int = 1
    hits: int = 0


class HookedSim(JupyterSim):
    """A :class:`JupyterSim` whose requests can run test hooks before they are answered."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.hooks: list[Hook] = []

    def hook(self, hook: Hook) -> Hook:
        """Add a hook (checked after the existing ones)."""
        with self.lock:
            self.hooks.append(hook)
        return hook

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]
    ) -> Response:
        """Run the first matching hook's callback, then answer (as it says, if it says)."""
        hook = self._match(method, path)
        if hook is not None and hook.before is not None:
            hook.before()  # outside the lock: the callback may take its time
        response = super().handle(method, path, query, headers)
        if hook is not None and hook.answer is not None:
            response = hook.answer(response)
        return response

    def _match(self, method: str, path: str) -> Hook | None:
        with self.lock:
            for hook in self.hooks:
                if hook.hits < hook.times and hook.when(method, path):
                    hook.hits += 1
                    return hook
        return None

    def calls(self, match: Callable[[str, str], bool]) -> list[str]:
        """The paths of the requests received so far that ``match`` accepts, in order."""
        with self.lock:
            return [path for method, path, _ in self.requests if match(method, path)]


class ServedWebhook:
    """A loopback HTTP endpoint that records every JSON POST; stop it with :meth:`close`."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _webhook_handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="webhook")
        self.thread.start()

    @property
    def url(self) -> str:
        """The URL to configure as ``notify.webhook_url``."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def events(self, kind: str) -> list[dict[str, Any]]:
        """Received bodies whose ``event`` is ``kind`` (``warning``, ``alert``)."""
        with self.lock:
            return [body for body in self.received if body.get("event") == kind]

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def _webhook_handler(hook: ServedWebhook) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            with hook.lock:
                hook.received.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    return Handler
