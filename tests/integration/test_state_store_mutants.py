"""The kill switch and lease stores, as `make mutants` found them unguarded
(docs/mutation-testing.md): what ``set`` returns and audits, and what renewing a lease keeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from janitor.model import AuditKind
from janitor.store import Store
from janitor.store.state import PauseInfo

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


def test_pause_and_resume_return_the_stored_state_and_audit_who_and_why(store: Store) -> None:
    paused = store.pause.set(True, reason="incident 42", actor="alice (cli)", now=NOW)
    expected = PauseInfo(paused=True, reason="incident 42", actor="alice (cli)", changed_at=NOW)
    assert paused == expected
    assert store.pause.get() == expected

    later = NOW + timedelta(minutes=5)
    resumed = store.pause.set(False, reason="", actor="bob (cli)", now=later)
    expected = PauseInfo(paused=False, reason="", actor="bob (cli)", changed_at=later)
    assert resumed == expected
    assert store.pause.get() == expected

    rows = [(r.kind, r.actor, r.reason, r.at) for r in store.audit.events()]
    assert rows == [
        (AuditKind.PAUSE, "alice (cli)", "janitor paused by alice (cli): incident 42", NOW),
        (AuditKind.RESUME, "bob (cli)", "janitor resumed by bob (cli)", later),
    ]


def test_a_pause_without_a_reason_says_only_who(store: Store) -> None:
    store.pause.set(True, reason="", actor="carol", now=NOW)
    (row,) = store.audit.events()
    assert row.reason == "janitor paused by carol"


def test_renewing_keeps_holder_and_token_and_extends_the_expiry(store: Store) -> None:
    ttl = timedelta(minutes=5)
    taken = store.leases.acquire("target:nb", "replica-a", ttl)
    assert taken is not None
    renewed = store.leases.renew("target:nb", "replica-a", taken.token, timedelta(hours=1))
    assert renewed is not None
    assert (renewed.name, renewed.holder, renewed.token) == ("target:nb", "replica-a", taken.token)
    assert renewed.expires_at - taken.expires_at > timedelta(minutes=50)
    assert renewed.expires_at.utcoffset() == timedelta(0)
    stored = store.leases.get("target:nb")
    assert stored is not None
    assert (stored.holder, stored.token) == ("replica-a", taken.token)
