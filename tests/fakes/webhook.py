"""A webhook receiver served through httpx.MockTransport: records every JSON POST."""

from __future__ import annotations

import json
from typing import Any

import httpx


class WebhookReceiver:
    """Answers POSTs with ``status`` (200 by default) and keeps what it received."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.status = 200

    def transport(self) -> httpx.MockTransport:
        """The transport to give janitor's webhook client."""
        return httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(dict(request.headers))
        if self.status >= 300:
            return httpx.Response(self.status, json={"error": "unavailable"})
        self.received.append(json.loads(request.content))
        return httpx.Response(self.status, json={"ok": True})

    def events(self, kind: str) -> list[dict[str, Any]]:
        """Received bodies whose ``event`` is ``kind`` (warning, alert)."""
        return [body for body in self.received if body.get("event") == kind]
