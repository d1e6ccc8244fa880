"""Per-target leases and the fence on intents, on SQLite and PostgreSQL (DESIGN 5, "Replicas").

A lease row has a holder, an expiry and a fencing token. ``acquire`` takes a free or expired
lease (a new holder increments the token) or renews one's own (same token); ``renew`` only
extends the holder's own lease with its token and never takes one over; ``release`` expires
it. Contention from many threads and from many processes yields exactly one winner. An
intent (``AuditLog.append`` with a ``Fence``) and the observations (``ObservationStore.save``
with a fence) are written only while that lease and token are current.

Already-expired leases are made with a negative TTL, so no test sleeps.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from janitor.errors import LeaseLost
from janitor.model import AuditEvent, AuditKind, History, State
from janitor.store import Fence, Store
from janitor.store.state import LeaseInfo
from tests.integration.procs import HANG_GUARD, child_env

LEASE = "target:notebooks"
LONG = timedelta(minutes=5)
EXPIRED = timedelta(seconds=-1)


def _intent(token: int) -> AuditEvent:
    return AuditEvent(
        at=datetime.now(UTC),
        kind=AuditKind.INTENT,
        reason="about to delete",
        actor="test",
        target="notebooks",
        session_id="s-1",
        fencing_token=token,
    )


def _rows(store: Store) -> int:
    return store.audit.head()[0]


def test_acquire_gives_the_lease_to_one_holder_and_renewing_keeps_its_token(
    store: Store,
) -> None:
    first = store.leases.acquire(LEASE, "a", timedelta(minutes=1))
    assert first is not None
    assert (first.holder, first.token) == ("a", 1)
    assert first.expires_at.tzinfo is not None
    assert first.expires_at > datetime.now(UTC) + timedelta(seconds=30)
    assert store.leases.acquire(LEASE, "b", LONG) is None, "held and unexpired"
    stored = store.leases.get(LEASE)
    assert stored == LeaseInfo(name=LEASE, holder="a", token=1, expires_at=first.expires_at)
    assert store.leases.get("target:other") is None

    again = store.leases.acquire(LEASE, "a", LONG)  # the holder acquiring again renews
    assert again is not None
    assert again.token == first.token
    assert again.expires_at > first.expires_at
    renewed = store.leases.renew(LEASE, "a", first.token, timedelta(minutes=10))
    assert renewed is not None
    assert renewed.token == first.token
    assert renewed.expires_at > again.expires_at
    assert store.leases.renew(LEASE, "a", first.token + 1, LONG) is None, "wrong token"
    assert store.leases.renew(LEASE, "b", first.token, LONG) is None, "not the holder"
    assert store.leases.renew("target:other", "a", 1, LONG) is None, "no such lease"


def test_an_expired_lease_is_taken_over_with_the_next_token(store: Store) -> None:
    old = store.leases.acquire(LEASE, "a", EXPIRED)
    assert old is not None
    new = store.leases.acquire(LEASE, "b", LONG)
    assert new is not None
    assert (new.holder, new.token) == ("b", old.token + 1)
    assert store.leases.acquire(LEASE, "a", LONG) is None, "b holds it now"
    assert store.leases.renew(LEASE, "a", old.token, LONG) is None, "a cannot renew it back"
    stored = store.leases.get(LEASE)
    assert stored is not None
    assert (stored.holder, stored.token) == ("b", new.token)

    # an expired lease nobody took is renewed by its holder with its token: nobody acted
    lapsed = store.leases.acquire("target:lapsed", "a", EXPIRED)
    assert lapsed is not None
    renewed = store.leases.renew("target:lapsed", "a", lapsed.token, LONG)
    assert renewed is not None
    assert renewed.token == lapsed.token
    assert renewed.expires_at > datetime.now(UTC)


def test_release_frees_the_lease_for_the_next_holder_only_if_ours(store: Store) -> None:
    held = store.leases.acquire(LEASE, "a", LONG)
    assert held is not None
    store.leases.release(LEASE, "b")  # not b's: nothing happens
    assert store.leases.acquire(LEASE, "b", LONG) is None
    store.leases.release(LEASE, "a")
    released = store.leases.get(LEASE)
    assert released is not None
    assert released.expires_at < datetime.now(UTC)
    taken = store.leases.acquire(LEASE, "b", LONG)
    assert taken is not None
    assert (taken.holder, taken.token) == ("b", held.token + 1)
    # the same holder taking its released lease again keeps its token
    store.leases.release(LEASE, "b")
    again = store.leases.acquire(LEASE, "b", LONG)
    assert again is not None
    assert again.token == taken.token


def test_threads_racing_for_a_free_or_expired_lease_yield_one_winner(store: Store) -> None:
    for round_ in range(3):
        name = f"target:race-{round_}"
        if round_ > 0:  # rounds 1 and 2 race for an expired lease rather than a new row
            assert store.leases.acquire(name, "previous", EXPIRED) is not None
        holders = [f"thread-{n}" for n in range(12)]
        start = threading.Barrier(len(holders))

        def contend(
            holder: str, name: str = name, start: threading.Barrier = start
        ) -> LeaseInfo | None:
            start.wait(timeout=HANG_GUARD)
            return store.leases.acquire(name, holder, LONG)

        with ThreadPoolExecutor(max_workers=len(holders)) as pool:
            futures = {h: pool.submit(contend, h) for h in holders}
            results = {h: f.result(timeout=HANG_GUARD) for h, f in futures.items()}
        winners = [info for info in results.values() if info is not None]
        assert len(winners) == 1, winners
        stored = store.leases.get(name)
        assert stored is not None
        assert (stored.holder, stored.token) == (winners[0].holder, 1 if round_ == 0 else 2)


WORKER = """
import json, sys
from datetime import timedelta
from janitor.store import Store

store = Store.open(sys.argv[1])
store.leases.get("warm-up")  # connected before the start signal
print("ready", flush=True)
sys.stdin.readline()
info = store.leases.acquire(sys.argv[2], sys.argv[3], timedelta(minutes=5))
print(json.dumps(None if info is None else [info.holder, info.token]), flush=True)
store.close()
"""


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[str]]]:
    """Worker processes; killed if still running at the end."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=HANG_GUARD)


def test_processes_racing_for_the_lease_yield_one_winner(
    store: Store, db_url: str, workers: list[subprocess.Popen[str]]
) -> None:
    assert store.leases.acquire(LEASE, "previous", EXPIRED) is not None
    for n in range(4):
        workers.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, db_url, LEASE, f"process-{n}"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=child_env(),
            )
        )
    for proc in workers:  # every worker connected and waiting
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    for proc in workers:  # then all are released at once
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in workers:
        out, err = proc.communicate(timeout=HANG_GUARD)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1, results
    assert winners[0][1] == 2, "the expired lease was taken over once"
    stored = store.leases.get(LEASE)
    assert stored is not None
    assert [stored.holder, stored.token] == winners[0]


def test_an_intent_is_written_only_under_the_current_lease(store: Store) -> None:
    held = store.leases.acquire(LEASE, "a", LONG)
    assert held is not None
    fence = Fence(lease=LEASE, holder="a", token=held.token)
    [stored] = store.audit.append([_intent(held.token)], fence=fence)
    assert stored.id is not None
    before = _rows(store)

    for stale in (
        Fence(lease=LEASE, holder="a", token=held.token + 1),  # wrong token
        Fence(lease=LEASE, holder="b", token=held.token),  # wrong holder
        Fence(lease="target:other", holder="a", token=1),  # no such lease
    ):
        with pytest.raises(LeaseLost, match="is no longer ours"):
            store.audit.append([_intent(stale.token)], fence=stale)
    assert _rows(store) == before, "nothing was written"


def test_an_intent_under_an_expired_or_taken_over_lease_raises_lease_lost(store: Store) -> None:
    old = store.leases.acquire(LEASE, "a", EXPIRED)
    assert old is not None
    fence = Fence(lease=LEASE, holder="a", token=old.token)
    with pytest.raises(LeaseLost):
        store.audit.append([_intent(old.token)], fence=fence)  # expired, not yet taken
    assert store.leases.acquire(LEASE, "b", LONG) is not None
    with pytest.raises(LeaseLost, match=r"held by b \(token 2\)"):
        store.audit.append([_intent(old.token)], fence=fence)
    assert _rows(store) == 0
    assert store.audit.verify().ok


def test_observations_are_saved_only_under_the_current_lease(store: Store) -> None:
    now = datetime.now(UTC)
    history = History(first_seen=now, state=State.IDLE, state_since=now)
    old = store.leases.acquire(LEASE, "a", EXPIRED)
    assert old is not None
    new = store.leases.acquire(LEASE, "b", LONG)
    assert new is not None
    store.observations.save(
        "notebooks", [("s-1", "one", history)], fence=Fence(lease=LEASE, holder="b", token=2)
    )
    with pytest.raises(LeaseLost):
        store.observations.save(
            "notebooks",
            [("s-2", "stale", history)],
            fence=Fence(lease=LEASE, holder="a", token=old.token),
        )
    assert set(store.observations.load("notebooks")) == {"s-1"}
