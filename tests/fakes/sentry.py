"""A loopback Sentry: accepts envelopes at ``/api/<project>/envelope/`` and records them.

Use ``FakeSentry().dsn`` (``http://public@127.0.0.1:PORT/1``) as the DSN. Bodies are
decompressed (the SDK gzips them) and split into items; ``raw`` keeps every decompressed
body, so a test can assert that a secret appears in none of them. ``/hook`` accepts any
POST as a webhook sink and records its headers and body.
"""

from __future__ import annotations

import gzip
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Envelope:
    """One envelope: its header and its (item header, payload) pairs."""

    header: dict[str, Any]
    items: list[tuple[dict[str, Any], bytes]] = field(default_factory=list)

    def payloads(self, item_type: str) -> list[dict[str, Any]]:
        """The JSON payloads of the items of ``item_type`` (``event``, ``check_in``, ...)."""
        return [json.loads(body) for head, body in self.items if head.get("type") == item_type]


def parse_envelope(data: bytes) -> Envelope:
    """Split an envelope into header and items (sentry's envelope format)."""
    header_line, _, rest = data.partition(b"\n")
    envelope = Envelope(header=json.loads(header_line or b"{}"))
    while rest.strip():
        item_line, _, rest = rest.partition(b"\n")
        item_header = json.loads(item_line)
        length = item_header.get("length")
        if length is None:
            payload, _, rest = rest.partition(b"\n")
        else:
            payload, rest = rest[:length], rest[length:]
            rest = rest.removeprefix(b"\n")
        envelope.items.append((item_header, payload))
    return envelope


@dataclass
class Hook:
    """One webhook request."""

    path: str
    headers: dict[str, str]
    body: bytes


class FakeSentry:
    """The server; stop it with :meth:`close`."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.envelopes: list[Envelope] = []
        self.request_headers: list[dict[str, str]] = []
        self.hooks: list[Hook] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="fake-sentry")
        self.thread.start()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def dsn(self) -> str:
        """A DSN pointing at this server, project 1."""
        return f"http://public@127.0.0.1:{self.httpd.server_address[1]}/1"

    def record(self, path: str, headers: dict[str, str], body: bytes) -> None:
        """Store one request (called from the handler thread)."""
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        elif headers.get("content-encoding"):
            raise ValueError(f"unsupported encoding {headers['content-encoding']}")
        with self.lock:
            if path.startswith("/api/") and path.endswith("/envelope/"):
                self.raw.append(body)
                self.request_headers.append(headers)
                self.envelopes.append(parse_envelope(body))
            else:
                self.hooks.append(Hook(path, headers, body))

    def items(self, item_type: str) -> list[dict[str, Any]]:
        """Every payload of ``item_type`` received so far."""
        with self.lock:
            return [p for e in self.envelopes for p in e.payloads(item_type)]

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def _handler_for(fake: FakeSentry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            fake.record(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            answer = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    return Handler
