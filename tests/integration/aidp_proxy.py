"""A real Jupyter Server behind the AIDP front: real kernels decide, AIDP's API shape answers.

AIDP's notebook API proxies Jupyter Server (provider-apis.md sections 1.4 and 6.2). Here a
real ``jupyter_server`` runs with ``--ServerApp.base_url`` set to the AIDP base path
``/20260430/aiDataPlatforms/<id>/workspaces/<key>/notebook/`` (started by
:mod:`tests.integration.jupyter_server`, unchanged), and :class:`JupyterBackend` puts the
fake's documented front (:class:`tests.fakes.aidp.AidpApi`) before it. The front checks each
request's OCI signature, wraps the list in ``{"items": [...]}``, pages it, adds
``lifecycleState``, an ``etag`` per session (a digest of the model Jupyter returns, kernel state
and activity included: it moves whenever the session does), honours ``if-match`` (412) and
answers OCI error bodies and ``opc-request-id``; the backend forwards each call to Jupyter with
Jupyter's own token, on the same path. Nothing else is faked: ``last_activity``,
``execution_state`` and ``connections`` are the real kernel's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from tests.integration.jupyter_server import JupyterServer

PLATFORM = "ocid1.aidataplatform.oc1.iad.jupyterbacked"
WORKSPACE = "ws-jupyter"
#: the AIDP base path Jupyter is mounted at
BASE_PATH = f"/20260430/aiDataPlatforms/{PLATFORM}/workspaces/{WORKSPACE}/notebook/"


@dataclass
class JupyterBackend:
    """The sessions of one real Jupyter Server, as one AIDP workspace."""

    server: JupyterServer
    workspace: str = WORKSPACE

    def has_workspace(self, workspace: str) -> bool:
        """Only the workspace this server stands for."""
        return workspace == self.workspace

    def models(self, workspace: str) -> list[dict[str, Any]]:
        """``GET api/sessions``, as AIDP models, oldest first (the order Jupyter keeps)."""
        response = self.server.request("GET", "api/sessions", track=True)
        response.raise_for_status()
        return [_aidp(model) for model in response.json()]

    def model(self, workspace: str, session_id: str) -> dict[str, Any] | None:
        """``GET api/sessions/{id}``; None on Jupyter's 404."""
        response = self.server.request("GET", f"api/sessions/{session_id}", track=True)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return _aidp(response.json())

    def etag(self, workspace: str, session_id: str, model: dict[str, Any]) -> str:
        """A digest of what Jupyter reports for the session."""
        return hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()[:32]

    def rename(self, workspace: str, session_id: str, name: str) -> dict[str, Any] | None:
        """``PATCH api/sessions/{id}`` with the new name only."""
        response = self.server.request(
            "PATCH", f"api/sessions/{session_id}", json={"name": name}, track=True
        )
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return _aidp(response.json())

    def delete(self, workspace: str, session_id: str) -> bool:
        """``DELETE api/sessions/{id}``: Jupyter shuts the kernel down, then drops the row."""
        response = self.server.request("DELETE", f"api/sessions/{session_id}", track=True)
        if response.status_code in (404, 410):
            return False
        response.raise_for_status()
        return True

    def remove(self, workspace: str, session_id: str) -> None:
        """The session vanishes."""
        self.delete(workspace, session_id)


def _aidp(model: dict[str, Any]) -> dict[str, Any]:
    """Jupyter's session model as AIDP's ``Session``: the same fields plus ``lifecycleState``."""
    aidp = {key: value for key, value in model.items() if key != "notebook"}  # deprecated key
    aidp["lifecycleState"] = "ACTIVE"
    return aidp
