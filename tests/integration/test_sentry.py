"""Sentry against a local fake endpoint, with the daemon as a real subprocess.

A failed action and a blast-radius block each become an error event, each sweep a Crons
check-in; no configured secret reaches Sentry (the simulated server even echoes the token
in its error body, so the scrubber has something to remove); and no ``sentry-trace`` or
``baggage`` header reaches a provider or the webhook although the SDK's httpx integration
is active.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from janitor.observability import sentry
from janitor.settings import Config
from janitor.sim.jupyter import JupyterSim, Response, SimServer
from tests.conftest import invoke, make_config
from tests.fakes.daemon import NotifySocket, daemon_env, free_port, running_daemon, wait_until
from tests.fakes.sentry import FakeSentry

TOKEN = "jupyter-token-5f3a9c1e77"  # test secrets, asserted never to leak
HOOK_SECRET = "hook-header-secret-91b2"
HOOK_PATH = "hook-path-secret-0c4d"
TRACE_HEADERS = {"sentry-trace", "baggage", "traceparent", "tracestate"}

POLICIES = """
policies:
  - name: idle-notebooks
    match: {state: [idle], idle_for: 2h}
    action: delete
    mode: enforce
"""


class RecordingSim(JupyterSim):
    """Records each request's headers; refuses every DELETE, echoing the credential."""

    def __init__(self) -> None:
        super().__init__(token=TOKEN)
        self.headers_seen: list[dict[str, str]] = []

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]
    ) -> Response:
        """Record, then refuse deletes (400) or answer like the simulator."""
        with self.lock:
            self.headers_seen.append(dict(headers))
        if method == "DELETE":
            echoed = headers.get("authorization", "")
            return Response(400, {"message": f"kernel is protected (you sent {echoed})"})
        return super().handle(method, path, query, headers)


@pytest.fixture
def fake_sentry() -> Iterator[FakeSentry]:
    fake = FakeSentry()
    yield fake
    fake.close()


@pytest.fixture
def sims() -> Iterator[tuple[RecordingSim, SimServer, RecordingSim, SimServer]]:
    notebooks, crowded = RecordingSim(), RecordingSim()
    notebooks.add_session("work/analysis.ipynb", idle_for=timedelta(hours=3))
    for n in range(3):
        crowded.add_session(f"old-{n}.ipynb", idle_for=timedelta(hours=5))
    first, second = notebooks.serve(), crowded.serve()
    yield notebooks, first, crowded, second
    first.stop()
    second.stop()


def write_config(tmp_path: Path, fake: FakeSentry, notebooks_url: str, crowded_url: str) -> Path:
    path = tmp_path / "janitor.toml"
    path.write_text(
        f'database_url = "sqlite:///{tmp_path / "janitor.db"}"\n'
        'sweep_interval = "1h"\nsweep_jitter = "0s"\nlog_format = "json"\n'
        f'listen = "127.0.0.1:{free_port()}"\n\n'
        "[notify]\n"
        f'webhook_url = "{fake.url}/hook/{HOOK_PATH}"\n'
        f'webhook_headers = {{ "X-Hook-Secret" = "{HOOK_SECRET}" }}\n\n'
        "[sentry]\n"
        f'dsn = "{fake.dsn}"\nenvironment = "test"\n\n'
        '[[targets]]\nname = "notebooks"\nprovider = "jupyter"\n'
        f'base_url = "{notebooks_url}/"\ntoken = "{TOKEN}"\n\n'
        '[[targets]]\nname = "crowded"\nprovider = "jupyter"\n'
        f'base_url = "{crowded_url}/"\ntoken = "{TOKEN}"\nmax_actions_per_sweep = 1\n',
        encoding="utf-8",
    )
    return path


def events_by_alert(fake: FakeSentry) -> dict[str, dict[str, Any]]:
    return {e["tags"]["alert"]: e for e in fake.items("event") if "alert" in e.get("tags", {})}


def test_failed_action_block_and_checkin_reach_sentry_without_secrets_or_trace_headers(
    tmp_path: Path,
    fake_sentry: FakeSentry,
    sims: tuple[RecordingSim, SimServer, RecordingSim, SimServer],
) -> None:
    notebooks, first, crowded, second = sims
    config = write_config(tmp_path, fake_sentry, first.url, second.url)
    policies = tmp_path / "policies.yaml"
    policies.write_text(POLICIES, encoding="utf-8")
    assert invoke("-c", str(config), "policy", "apply", "-f", str(policies)).exit_code == 0
    notify = NotifySocket()
    try:
        with running_daemon(config, daemon_env(notify), tmp_path / "daemon.log") as daemon:
            notify.wait_for("STATUS=last sweep")
            wait_until(
                lambda: (
                    {"action_failed", "blocked"} <= set(events_by_alert(fake_sentry))
                    and fake_sentry.items("check_in")
                ),
                "the events and the check-in to reach the fake Sentry",
            )
            assert daemon.terminate() == 0
    finally:
        notify.close()

    events = events_by_alert(fake_sentry)
    failed = events["action_failed"]
    assert failed["level"] == "error"
    assert failed["tags"]["target"] == "notebooks"
    assert failed["tags"]["action"] == "delete"
    assert failed["tags"]["outcome"] == "failed"
    assert "delete failed on target notebooks" in failed["message"]
    assert "[redacted]" in failed["message"], "the echoed token was scrubbed"
    assert failed["environment"] == "test"
    assert "httpx" in failed["sdk"]["integrations"], "the SDK could add trace headers"

    blocked = events["blocked"]
    assert blocked["tags"]["target"] == "crowded"
    assert blocked["fingerprint"] == ["janitor", "blocked", "target=crowded"]

    (checkin,) = fake_sentry.items("check_in")
    assert checkin["monitor_slug"] == "janitor-sweep"
    assert checkin["status"] == "error"  # an action failed in this sweep
    assert checkin["monitor_config"]["schedule"] == {
        "type": "interval",
        "value": 60,
        "unit": "minute",
    }

    for body in fake_sentry.raw:
        for secret in (TOKEN, HOOK_SECRET, HOOK_PATH):
            assert secret.encode() not in body

    # the secrets were in use: the servers and the webhook got them
    assert notebooks.headers_seen
    assert all(h.get("authorization") == f"token {TOKEN}" for h in notebooks.headers_seen)
    (hook,) = fake_sentry.hooks
    assert hook.path == f"/hook/{HOOK_PATH}"
    assert hook.headers["x-hook-secret"] == HOOK_SECRET
    assert json.loads(hook.body)["kind"] == "blocked"

    seen = [*notebooks.headers_seen, *crowded.headers_seen, hook.headers]
    assert not [h for h in seen if TRACE_HEADERS & set(h)], "trace headers reached a peer"


def test_secrets_of_includes_url_passwords_and_token_files(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token-1234\n", encoding="utf-8")
    config = make_config(
        "postgresql://janitor:db-pass-5678@db.example/janitor",
        [
            {
                "name": "nb",
                "provider": "jupyter",
                "base_url": "http://127.0.0.1:8888/",
                "token_file": str(token_file),
            },
            {
                "name": "nb2",
                "provider": "jupyter",
                "base_url": "http://127.0.0.1:8889/",
                "token": "inline-token-9999",
            },
        ],
        notify={"webhook_headers": {"Authorization": "Bearer hook-abcdef"}},
    )
    secrets = sentry.secrets_of(config)
    assert "db-pass-5678" in secrets
    assert "postgresql://janitor:db-pass-5678@db.example/janitor" in secrets
    assert "file-token-1234" in secrets
    assert "inline-token-9999" in secrets
    assert "Bearer hook-abcdef" in secrets
    assert secrets == sorted(secrets, key=len, reverse=True), "longest replaced first"


def test_scrub_replaces_secrets_anywhere() -> None:
    event = {
        "message": "failed with s3cr3t-value",
        "breadcrumbs": {"values": [{"message": "GET ok", "data": {"h": ("x", "s3cr3t-value")}}]},
        "extra": {"s3cr3t-value": 1, "n": 5},
    }
    assert sentry.scrub(event, ["s3cr3t-value"]) == {
        "message": "failed with [redacted]",
        "breadcrumbs": {"values": [{"message": "GET ok", "data": {"h": ["x", "[redacted]"]}}]},
        "extra": {"[redacted]": 1, "n": 5},
    }


def test_without_a_dsn_sentry_stays_off_even_with_sentry_dsn_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SENTRY_DSN", "http://public@127.0.0.1:9/1")
    config: Config = make_config("sqlite:///unused.db")
    assert config.settings.sentry.dsn is None
    assert sentry.init_sentry(config) is False
    sentry.capture_alert("blocked", "nothing is sent", {"target": "nb"})  # a no-op
    sentry.checkin(True, 1.0)
    sentry.flush()


@pytest.mark.parametrize(
    ("interval", "jitter", "timeout", "expected"),
    [
        (timedelta(minutes=5), timedelta(seconds=20), timedelta(minutes=10), (5, 2, 10)),
        (timedelta(seconds=30), timedelta(0), timedelta(seconds=60), (1, 1, 1)),
        (timedelta(hours=1), timedelta(minutes=3), timedelta(hours=2), (60, 4, 120)),
    ],
)
def test_monitor_config_uses_whole_minutes(
    interval: timedelta, jitter: timedelta, timeout: timedelta, expected: tuple[int, int, int]
) -> None:
    monitor = sentry.monitor_config(interval, jitter, timeout)
    value = monitor["schedule"]["value"]
    assert isinstance(value, int)
    assert (value, monitor["checkin_margin"], monitor["max_runtime"]) == expected


def test_secret_str_values_only(tmp_path: Path) -> None:
    """Plain strings in the config are not secrets; SecretStr values are."""
    config = make_config(
        f"sqlite:///{tmp_path / 'j.db'}",
        [{"name": "nb", "provider": "jupyter", "base_url": "http://127.0.0.1:8888/"}],
        sentry={"dsn": SecretStr("http://key1@h/1")},
    )
    assert set(sentry.secrets_of(config)) == {"http://key1@h/1", f"sqlite:///{tmp_path / 'j.db'}"}
