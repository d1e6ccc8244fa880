"""T23: the audit chain makes tampering evident, on SQLite and PostgreSQL.

Each case appends a fresh chain of N rows (in several transactions, as sweeps do), then
tampers with it the way someone with write access to the database could:

* edit one column of one row (every column is edited in turn, to a value of its type);
* delete a row (not the last one: see truncation below);
* insert a forged row between two rows, or before the first, with a self-consistent hash
  (its ``prev_hash`` is the hash of the row before it, its ``hash`` covers its content);
* swap the contents of two rows;
* reorder a run of rows.

``AuditLog.verify()`` must report every one of them. Sizes: CI runs a few hundred cases on
SQLite and a few dozen on PostgreSQL; ``JANITOR_TEST_FULL=1`` runs the 1,000 of
reliability.md T23 on each.

What a hash chain alone cannot see, and how janitor covers it:

* **Tail truncation** (the last rows deleted) leaves a valid, shorter chain, and so does an
  attacker who rewrites every hash from the tampered row to the end. Both are detected by
  comparing with the head exported *outside* the database after every sweep (the
  ``janitor_audit_head`` metric and the sweep log line: highest row id and head hash, from
  ``AuditLog.head()``): a genuine chain only grows, so the row with that id must still be
  there with that hash. ``test_truncation_*`` and ``test_rewritten_tail_*``
  show it with :func:`extends`.
* **A forged row appended after the head** is indistinguishable from a real append for an
  unkeyed chain; only rows up to the last exported head are protected.
"""

from __future__ import annotations

import os
import random
import string
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from janitor.model import Action, AuditEvent, AuditKind, Outcome
from janitor.store import Store
from janitor.store.audit import GENESIS, HASHED_FIELDS, AuditLog, compute_hash
from janitor.store.tables import AuditRow
from tests.conftest import FULL

SEED = int(os.environ.get("JANITOR_TEST_SEED", "23"))
COLUMNS = (*HASHED_FIELDS, "hash")
TAMPERS = ("edit", "delete", "insert", "swap", "reorder")


def _cases(store: Store) -> int:
    if FULL:
        return 1000
    return 300 if store.db.dialect == "sqlite" else 40


# --- building chains -------------------------------------------------------------------


def _text(rnd: random.Random, size: int = 8) -> str:
    alphabet = string.ascii_letters + string.digits + "-_ äé≥…"
    return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, size)))


def _maybe(rnd: random.Random, make: Callable[[], Any]) -> Any:
    return make() if rnd.random() < 0.6 else None


def random_event(rnd: random.Random, at: datetime) -> AuditEvent:
    """An audit row with a random mix of filled and empty fields."""
    return AuditEvent(
        at=at,
        kind=rnd.choice([k for k in AuditKind if k is not AuditKind.CHECKPOINT]),  # prune's
        reason=_text(rnd, 40),
        actor=f"janitor@{_text(rnd, 6)}",
        sweep_id=_maybe(rnd, lambda: f"{rnd.getrandbits(64):016x}"),
        target=_maybe(rnd, lambda: rnd.choice(["nb", "aidp-eu", "glue"])),
        session_id=_maybe(rnd, lambda: _text(rnd, 12)),
        session_name=_maybe(rnd, lambda: _text(rnd, 20)),
        session_kind=_maybe(rnd, lambda: rnd.choice(["notebook", "kernel", "sql"])),
        policy=_maybe(rnd, lambda: rnd.choice(["idle", "dead-kernels"])),
        policy_version=_maybe(rnd, lambda: rnd.randint(1, 9)),
        action=_maybe(rnd, lambda: rnd.choice(list(Action))),
        dry_run=rnd.random() < 0.5,
        outcome=_maybe(rnd, lambda: rnd.choice(list(Outcome))),
        http_status=_maybe(rnd, lambda: rnd.choice([200, 204, 404, 409, 503])),
        provider_request_id=_maybe(rnd, lambda: _text(rnd, 10)),
        error=_maybe(rnd, lambda: _text(rnd, 30)),
        fencing_token=_maybe(rnd, lambda: rnd.randint(1, 50)),
        intent_id=_maybe(rnd, lambda: rnd.randint(1, 500)),
        details=_maybe(
            rnd, lambda: {"diff": _text(rnd, 20), "version": rnd.randint(1, 9), "n": [1, "≥"]}
        ),
    )


def fresh_chain(store: Store, rnd: random.Random, size: int) -> list[int]:
    """Empty the trail and append ``size`` rows in a few transactions; return their ids."""
    with store.db.transaction() as tx:
        tx.execute(delete(AuditRow))
    at = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    events = []
    for _ in range(size):
        at += timedelta(microseconds=rnd.randint(0, 90_000_000))
        events.append(random_event(rnd, at))
    cut = [rnd.randrange(1, size)]
    for start, end in zip([0, *cut], [*cut, size], strict=True):
        store.audit.append(events[start:end])
    return [event.id for event in store.audit.events() if event.id is not None]


# --- tampering ---------------------------------------------------------------------------


def _row(store: Store, row_id: int) -> dict[str, Any]:
    with store.db.transaction() as tx:
        row = tx.get(AuditRow, row_id)
        assert row is not None
        return {name: getattr(row, name) for name in COLUMNS}


def _write(store: Store, changes: dict[int, dict[str, Any]]) -> None:
    """Update rows in one transaction; hashes are unique, so park them first."""
    with store.db.transaction() as tx:
        for number, row_id in enumerate(changes):
            tx.execute(update(AuditRow).where(AuditRow.id == row_id).values(hash=f"{number:064x}"))
        for row_id, values in changes.items():
            tx.execute(update(AuditRow).where(AuditRow.id == row_id).values(**values))


def _other(rnd: random.Random, choices: list[Any], current: Any) -> Any:
    return rnd.choice([c for c in choices if c != current])


def changed_value(rnd: random.Random, column: str, value: Any) -> Any:
    """A different value for ``column``, of the column's type."""
    if column == "at":
        delta = timedelta(microseconds=rnd.choice([1, -1, 1000, 86_400_000_000]))
        return value + delta
    if column == "kind":
        return _other(rnd, [k.value for k in AuditKind], value)
    if column == "action":
        return _other(rnd, [None, *(a.value for a in Action)], value)
    if column == "outcome":
        return _other(rnd, [None, *(o.value for o in Outcome)], value)
    if column == "dry_run":
        return not value
    if column in ("policy_version", "http_status", "fencing_token", "intent_id"):
        return 1 if value is None else _other(rnd, [None, value + 1, 0], value)
    if column == "details":  # JSON: set, clear, or change one nested value
        if value is None:
            return {"diff": _text(rnd)}
        return rnd.choice([None, {**value, "version": value.get("version", 0) + 1}, {}])
    if column in ("prev_hash", "hash"):
        return _other(rnd, [f"{rnd.getrandbits(256):064x}", GENESIS], value)
    if column in ("reason", "actor"):  # NOT NULL text
        return value + "." if rnd.random() < 0.5 else value[:-1] + chr(ord(value[-1]) ^ 1)
    # nullable text: set, clear or alter
    if value is None:
        return _text(rnd)
    return rnd.choice([None, value + "x", value.upper() if value.upper() != value else "Z"])


@dataclass(frozen=True)
class Tamper:
    kind: str
    detail: str


def tamper(store: Store, rnd: random.Random, ids: list[int], case: int) -> Tamper:
    """Apply one random tampering; say what was done."""
    kind = TAMPERS[case % len(TAMPERS)] if case < 2 * len(TAMPERS) else rnd.choice(TAMPERS)
    if kind == "edit":
        column = COLUMNS[(case // len(TAMPERS)) % len(COLUMNS)]
        row_id = rnd.choice(ids)
        old = _row(store, row_id)[column]
        new = changed_value(rnd, column, old)
        assert new != old
        _write(store, {row_id: {column: new}})
        return Tamper("edit", f"row {row_id} {column}: {old!r} -> {new!r}")
    if kind == "delete":
        row_id = rnd.choice(ids[:-1])  # the last row is truncation (tested separately)
        with store.db.transaction() as tx:
            tx.execute(delete(AuditRow).where(AuditRow.id == row_id))
        return Tamper("delete", f"row {row_id} deleted")
    if kind == "insert":
        return forge(store, rnd, ids, position=rnd.randrange(len(ids)))
    if kind == "swap":
        first, second = rnd.sample(ids, 2)
        a, b = _row(store, first), _row(store, second)
        _write(store, {first: b, second: a})
        return Tamper("swap", f"rows {first} and {second} swapped")
    start = rnd.randrange(len(ids) - 1)
    end = rnd.randrange(start + 2, len(ids) + 1)
    segment = ids[start:end]
    contents = [_row(store, i) for i in segment]
    shift = rnd.randrange(1, len(segment))
    moved = contents[shift:] + contents[:shift]
    _write(store, dict(zip(segment, moved, strict=True)))
    return Tamper("reorder", f"rows {segment} rotated by {shift}")


def forge(store: Store, rnd: random.Random, ids: list[int], *, position: int) -> Tamper:
    """Insert a row with a self-consistent hash before the row at ``position``, making room
    by renumbering the rows after it (as an attacker would, to keep ids dense)."""
    prev = _row(store, ids[position - 1])["hash"] if position > 0 else GENESIS
    at = _row(store, ids[position])["at"]
    event = replace(random_event(rnd, at), prev_hash=prev)
    event = replace(event, hash=compute_hash(event))
    with store.db.transaction() as tx:
        for row_id in reversed(ids[position:]):  # descending: ids stay unique at each step
            tx.execute(update(AuditRow).where(AuditRow.id == row_id).values(id=row_id + 1))
        values = {name: getattr(event, name) for name in HASHED_FIELDS}
        values.update(
            kind=event.kind.value,
            action=event.action.value if event.action else None,
            outcome=event.outcome.value if event.outcome else None,
        )
        tx.add(AuditRow(id=ids[position], hash=event.hash, **values))
    return Tamper("insert", f"forged row inserted as id {ids[position]} (position {position})")


# --- external anchor -------------------------------------------------------------------


def extends(audit: AuditLog, anchor: tuple[int, str]) -> bool:
    """Whether the chain still extends a head exported earlier (``AuditLog.head()``: the
    highest row id and its hash): it verifies, and the row with that id has that hash."""
    last_id, head = anchor
    if not audit.verify().ok:
        return False
    if last_id == 0:
        return True
    return [e.hash for e in audit.events() if e.id == last_id] == [head]


# --- tests -----------------------------------------------------------------------------


def test_verify_detects_every_single_tampering(store: Store) -> None:
    rnd = random.Random(SEED)
    cases = _cases(store)
    detected: dict[str, int] = {}
    for case in range(cases):
        ids = fresh_chain(store, rnd, rnd.randint(3, 25))
        before = store.audit.verify()
        assert before.ok, before.problems
        assert before.rows == len(ids)
        done = tamper(store, rnd, ids, case)
        result = store.audit.verify()
        assert not result.ok, f"seed {SEED} case {case}: not detected: {done.detail}"
        assert result.problems
        if case % 10 == 0:  # the exported head sees it too (see the truncation tests)
            assert not extends(store.audit, (before.rows, before.head))
        detected[done.kind] = detected.get(done.kind, 0) + 1
    assert set(detected) == set(TAMPERS)
    assert sum(detected.values()) == cases


def test_every_column_is_covered(store: Store) -> None:
    """Each column, edited alone, breaks the chain (the hash covers all but ``id``)."""
    rnd = random.Random(SEED + 1)
    for column in COLUMNS:
        ids = fresh_chain(store, rnd, 5)
        row_id = ids[2]
        old = _row(store, row_id)[column]
        _write(store, {row_id: {column: changed_value(rnd, column, old)}})
        result = store.audit.verify()
        assert not result.ok, column
        assert any(f"row {row_id}:" in p or f"row {ids[3]}:" in p for p in result.problems)


def test_a_forged_first_row_is_detected(store: Store) -> None:
    rnd = random.Random(SEED + 2)
    ids = fresh_chain(store, rnd, 6)
    forge(store, rnd, ids, position=0)
    result = store.audit.verify()
    assert not result.ok
    assert f"row {ids[1]}: prev_hash does not match" in result.problems[0]


def test_a_row_slipped_in_below_the_first_id_is_detected(store: Store) -> None:
    """A forged row given an id lower than every real row (0 or negative on a fresh SQLite
    table) must not escape the walk of the chain."""
    rnd = random.Random(SEED + 3)
    ids = fresh_chain(store, rnd, 4)
    event = replace(random_event(rnd, datetime(2026, 1, 1, tzinfo=UTC)), prev_hash=GENESIS)
    event = replace(event, hash=compute_hash(event))
    values = {name: getattr(event, name) for name in HASHED_FIELDS}
    values.update(
        kind=event.kind.value,
        action=event.action.value if event.action else None,
        outcome=event.outcome.value if event.outcome else None,
    )
    with store.db.transaction() as tx:
        tx.add(AuditRow(id=min(ids) - 1, hash=event.hash, **values))
        tx.add(AuditRow(id=-5, hash=f"{7:064x}", **values))
    assert not store.audit.verify().ok


def test_truncation_is_invisible_to_verify_but_not_to_the_exported_head(store: Store) -> None:
    rnd = random.Random(SEED + 4)
    cases = 50 if FULL else 10
    for case in range(cases):
        ids = fresh_chain(store, rnd, rnd.randint(3, 20))
        anchor = store.audit.head()  # what the sweep logs and exports as a metric
        assert anchor == (ids[-1], store.audit.events()[-1].hash)
        assert extends(store.audit, anchor)
        cut = rnd.randint(1, len(ids) - 1)
        with store.db.transaction() as tx:
            tx.execute(delete(AuditRow).where(AuditRow.id.in_(ids[-cut:])))
        # the shorter chain is internally consistent: verify alone cannot tell
        assert store.audit.verify().ok, f"case {case}"
        # the exported head can
        assert not extends(store.audit, anchor), f"case {case}: truncation of {cut} rows"
        # and new rows appended later do not hide it
        store.audit.append([random_event(rnd, datetime.now(UTC)) for _ in range(cut + 1)])
        assert store.audit.verify().ok
        assert not extends(store.audit, anchor)


def test_rewritten_tail_is_caught_by_the_exported_head(store: Store) -> None:
    """Editing a row and recomputing every hash after it yields a valid chain; the head
    exported before the edit no longer matches."""
    rnd = random.Random(SEED + 5)
    fresh_chain(store, rnd, 8)
    anchor = store.audit.head()
    events = store.audit.events()
    victim = rnd.randrange(len(events))
    rewritten = list(events)
    rewritten[victim] = replace(rewritten[victim], reason="nothing to see here")
    prev = events[victim - 1].hash if victim else GENESIS
    changes: dict[int, dict[str, Any]] = {}
    for event in rewritten[victim:]:
        fixed = replace(event, id=None, prev_hash=prev, hash=None)
        digest = compute_hash(fixed)
        assert event.id is not None
        changes[event.id] = {"reason": event.reason, "prev_hash": prev, "hash": digest}
        prev = digest
    _write(store, changes)
    assert store.audit.verify().ok
    assert not extends(store.audit, anchor)


def test_legitimate_appends_keep_extending_the_exported_head(store: Store) -> None:
    rnd = random.Random(SEED + 6)
    fresh_chain(store, rnd, 5)
    anchors = [store.audit.head()]
    for _ in range(5):
        store.audit.append([random_event(rnd, datetime.now(UTC)) for _ in range(rnd.randint(1, 4))])
        anchors.append(store.audit.head())
    assert all(extends(store.audit, anchor) for anchor in anchors)
    with store.db.transaction() as tx:
        assert (
            tx.scalar(select(AuditRow.hash).order_by(AuditRow.id.desc()).limit(1)) == anchors[-1][1]
        )


@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_deleting_any_row_but_the_last_is_detected(store: Store, position: str) -> None:
    rnd = random.Random(SEED + 7)
    ids = fresh_chain(store, rnd, 6)
    anchor = store.audit.head()
    row_id = {"first": ids[0], "middle": ids[3], "last": ids[-1]}[position]
    with store.db.transaction() as tx:
        tx.execute(delete(AuditRow).where(AuditRow.id == row_id))
    assert store.audit.verify().ok is (position == "last")
    assert not extends(store.audit, anchor)


@pytest.mark.parametrize(
    ("column", "value"), [("kind", "bogus"), ("action", "nuke"), ("outcome", "?")]
)
def test_an_unreadable_value_is_reported_not_raised(store: Store, column: str, value: str) -> None:
    """A value outside the enum (written with SQL) is a tampered row like any other."""
    rnd = random.Random(SEED + 8)
    ids = fresh_chain(store, rnd, 4)
    _write(store, {ids[1]: {column: value}})
    result = store.audit.verify()
    assert not result.ok
    assert any(f"row {ids[1]}:" in p for p in result.problems)
