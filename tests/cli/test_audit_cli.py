"""``janitor audit list|export|verify|prune`` on SQLite and PostgreSQL: filters, exports that
round-trip (and still hash), and a prune that keeps the chain verifiable."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, update

from janitor.model import Action, AuditEvent, AuditKind, Outcome
from janitor.store import Store
from janitor.store.audit import compute_hash
from janitor.store.tables import AuditRow
from tests.conftest import invoke, jupyter_toml

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=800)  # well before a 400d cut-off


@pytest.fixture
def config(tmp_path: Path, store: Store, db_url: str) -> Path:
    path = tmp_path / "janitor.toml"
    path.write_text(jupyter_toml(db_url, "http://127.0.0.1:9/"))
    return path


def row(at: datetime, **kw: Any) -> AuditEvent:
    values: dict[str, Any] = {
        "kind": AuditKind.SKIP,
        "reason": "no policy matched",
        "actor": "janitor@host",
        "target": "notebooks",
    }
    values.update(kw)
    return AuditEvent(at=at, **values)


def fill(store: Store) -> list[AuditEvent]:
    """A small trail: two policies, several outcomes, sessions named etl-* and nb-*."""
    events = [
        row(OLD, kind=AuditKind.POLICY_CHANGE, target=None, policy="idle", policy_version=1,
            reason="policy idle created", details={"version": 1, "diff": "+ name: idle"}),
        row(OLD + timedelta(hours=1), session_id="k-1", session_name="etl-daily",
            policy="idle", policy_version=1, kind=AuditKind.OUTCOME, outcome=Outcome.WOULD_ACT,
            action=Action.DELETE, dry_run=True, reason="would delete: idle 3h ≥ 2h"),
        row(NOW - timedelta(days=3), session_id="k-2", session_name="etl-hourly",
            policy="stuck", policy_version=2, kind=AuditKind.OUTCOME, outcome=Outcome.FAILED,
            action=Action.DELETE, reason="not done: 500", error="boom"),
        row(NOW - timedelta(days=2), session_id="k-3", session_name="nb-alice",
            policy="idle", policy_version=1, kind=AuditKind.OUTCOME, outcome=Outcome.EXECUTED,
            action=Action.DELETE, reason="delete done, with a comma, and \"quotes\"\nand a line"),
        row(NOW - timedelta(hours=1), session_id="ETL-X", session_name=None,
            reason="skip: exempt"),
    ]  # fmt: skip
    return store.audit.append(events)


def listed(config: Path, *args: str) -> list[dict[str, Any]]:
    result = invoke("-c", str(config), "audit", "list", "-o", "json", *args)
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def test_list_filters_by_policy_outcome_until_and_session_name_or_glob(
    store: Store, config: Path
) -> None:
    stored = fill(store)
    ids = [e.id for e in stored]
    assert [r["id"] for r in listed(config, "--policy", "idle")] == [ids[0], ids[1], ids[3]]
    assert [r["id"] for r in listed(config, "--outcome", "failed", "--outcome", "executed")] == [
        ids[2],
        ids[3],
    ]
    assert [r["id"] for r in listed(config, "--session", "etl-*")] == [ids[1], ids[2]], (
        "a glob over names, case-sensitive (ETL-X is not etl-*) on both databases"
    )
    assert [r["id"] for r in listed(config, "--session", "etl-daily")] == [ids[1]], "by name"
    assert [r["id"] for r in listed(config, "--session", "k-3")] == [ids[3]], "by id"
    assert [r["id"] for r in listed(config, "--session", "ETL-?")] == [ids[4]]
    assert [r["id"] for r in listed(config, "--session", "etl-[dx]*")] == [ids[1]]
    assert [r["id"] for r in listed(config, "--until", "400d")] == [ids[0], ids[1]]
    window = listed(config, "--since", "4d", "--until", "1d")
    assert [r["id"] for r in window] == [ids[2], ids[3]]
    at = stored[2].at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert [r["id"] for r in listed(config, "--since", at, "--until", at)] == [ids[2]]
    assert [r["id"] for r in listed(config, "--limit", "2")] == ids[-2:]
    assert listed(config, "--policy", "nope") == []
    first = listed(config)[0]
    assert first["details"] == {"version": 1, "diff": "+ name: idle"}
    assert first["at"].endswith("Z"), "RFC 3339 UTC for scripts"
    bad = invoke("-c", str(config), "audit", "list", "--until", "2026-11-22 10:00")
    assert bad.exit_code == 2
    assert "--until: invalid duration '2026-11-22 10:00'" in bad.stderr
    assert "a time with a zone" in bad.stderr


def test_list_table_wraps_long_reasons_or_shows_them_whole_with_wide(
    store: Store, config: Path
) -> None:
    long = "idle 3h12m ≥ 2h and 0 connections " * 6
    store.audit.append([row(NOW, session_id="k-9", reason=long.strip())])
    table = invoke("-c", str(config), "audit", "list")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "AT", "KIND", "TARGET"]
    assert len(lines) > 2, "the reason continues on the next lines"
    assert max(len(line) for line in lines) < 200
    assert "\x1b[" not in table.stdout, "no colour when stdout is not a terminal"
    assert NOW.strftime("%Y-%m-%d %H:%M:%SZ") in lines[1]
    wide = invoke("-c", str(config), "audit", "list", "--wide")
    assert len(wide.stdout.splitlines()) == 2
    assert long.strip() in wide.stdout


def _event(record: dict[str, Any]) -> AuditEvent:
    """An exported record back as an audit row (types restored)."""
    values = dict(record)
    values["at"] = datetime.fromisoformat(values["at"])
    values["kind"] = AuditKind(values["kind"])
    values["action"] = Action(values["action"]) if values["action"] else None
    values["outcome"] = Outcome(values["outcome"]) if values["outcome"] else None
    return AuditEvent(**values)


def _from_csv(cell: str, name: str) -> Any:
    if cell == "":
        return None
    if name in ("id", "policy_version", "http_status", "fencing_token", "intent_id"):
        return int(cell)
    if name == "dry_run":
        return cell == "true"
    if name == "details":
        return json.loads(cell)
    return cell


def test_export_round_trips_in_jsonl_and_csv_and_every_row_still_hashes(
    store: Store, config: Path
) -> None:
    fill(store)
    stored = store.audit.events()
    jsonl = invoke("-c", str(config), "audit", "export", "--format", "jsonl")
    assert jsonl.exit_code == 0, jsonl.output
    from_jsonl = [_event(json.loads(line)) for line in jsonl.stdout.splitlines()]
    text = invoke("-c", str(config), "audit", "export", "--format", "csv")
    assert text.exit_code == 0, text.output
    reader = csv.DictReader(io.StringIO(text.stdout))
    from_csv = [_event({k: _from_csv(v, k) for k, v in r.items()}) for r in reader]
    assert from_jsonl == stored
    assert from_csv == stored
    for event in from_jsonl:  # exported rows can be verified away from the database
        assert compute_hash(_unsealed(event)) == event.hash
    assert "exported" not in jsonl.stderr, "no progress line when stderr is not a terminal"
    # the same filters as `audit list`
    filtered = invoke(
        "-c", str(config), "audit", "export", "--session", "etl-*", "--outcome", "failed"
    )
    assert [json.loads(line)["session_name"] for line in filtered.stdout.splitlines()] == [
        "etl-hourly"
    ]
    empty = invoke("-c", str(config), "audit", "export", "--format", "csv", "--policy", "nope")
    assert empty.stdout.splitlines() == [",".join(json.loads(jsonl.stdout.splitlines()[0]))]


def _unsealed(event: AuditEvent) -> AuditEvent:
    from dataclasses import replace

    return replace(event, id=None, hash=None)


def test_export_streams_in_batches(store: Store) -> None:
    """The store hands rows out a batch at a time, in order, whatever the batch size."""
    store.audit.append([row(OLD + timedelta(seconds=i), session_id=f"s-{i}") for i in range(25)])
    everything = store.audit.events()
    assert list(store.audit.stream(batch=4)) == everything
    assert list(store.audit.stream(batch=4, descending=True)) == everything[::-1]
    assert store.audit.events(last=3) == everything[-3:]


# --- prune ----------------------------------------------------------------------------------


def trail_with_an_old_open_intent(store: Store) -> dict[str, int]:
    """Old rows, an old intent still open (its outcome only ``accepted``), more old rows, and
    recent ones."""
    old = [row(OLD + timedelta(minutes=i), session_id=f"old-{i}") for i in range(5)]
    first = store.audit.append(old)
    [intent] = store.audit.append(
        [row(OLD + timedelta(hours=1), kind=AuditKind.INTENT, session_id="job-7",
             action=Action.CANCEL, policy="stuck", policy_version=1, reason="about to cancel")]
    )  # fmt: skip
    store.audit.append(
        [row(OLD + timedelta(hours=2), kind=AuditKind.OUTCOME, session_id="job-7",
             action=Action.CANCEL, outcome=Outcome.ACCEPTED, intent_id=intent.id,
             reason="cancel accepted, settling")]
        + [row(OLD + timedelta(hours=3, minutes=i), session_id=f"later-{i}") for i in range(3)]
    )  # fmt: skip
    recent = store.audit.append([row(NOW - timedelta(days=1), session_id="new")])
    assert first[0].id is not None
    assert intent.id is not None
    assert recent[0].id is not None
    return {"first": first[0].id, "intent": intent.id, "recent": recent[0].id}


def test_prune_then_verify_passes_and_fails_after_tampering(store: Store, config: Path) -> None:
    ids = trail_with_an_old_open_intent(store)
    before = store.audit.head()
    result = invoke("-c", str(config), "audit", "prune", "--before", "400d", "--actor", "ops")
    assert result.exit_code == 0, result.output
    assert "audit pruned by ops: 5 rows written before" in result.stdout
    assert f"intent {ids['intent']} has no final outcome yet" in result.stdout
    remaining = store.audit.events()
    assert remaining[0].id == ids["intent"], "the open intent and everything after it stay"
    checkpoint = remaining[-1]
    assert checkpoint.kind is AuditKind.CHECKPOINT
    assert checkpoint.actor == "ops"
    assert checkpoint.details is not None
    assert checkpoint.details["pruned_through_id"] == ids["intent"] - 1
    assert checkpoint.details["removed"] == 5
    # the chain's length (highest id) only grew: the truncation alert stays meaningful
    assert store.audit.head()[0] > before[0]

    ok = invoke("-c", str(config), "audit", "verify")
    assert ok.exit_code == 0, ok.output
    assert f"from checkpoint row {checkpoint.id} (rows up to {ids['intent'] - 1} pruned" in (
        ok.stdout
    )
    as_json = json.loads(invoke("-c", str(config), "audit", "verify", "-o", "json").stdout)
    assert as_json["ok"] is True
    assert as_json["pruned_through_id"] == ids["intent"] - 1

    # nothing more to prune while the intent is open: no second checkpoint
    again = invoke("-c", str(config), "audit", "prune", "--before", "400d")
    assert again.exit_code == 0
    assert "nothing to prune" in again.stdout
    assert [e.kind for e in store.audit.events()].count(AuditKind.CHECKPOINT) == 1

    with store.db.transaction() as tx:
        tx.execute(
            update(AuditRow).where(AuditRow.id == ids["recent"]).values(reason="nothing here")
        )
    broken = invoke("-c", str(config), "audit", "verify")
    assert broken.exit_code == 1
    assert f"row {ids['recent']}: content does not match its hash" in broken.stderr
    refused = invoke("-c", str(config), "audit", "prune", "--before", "400d")
    assert refused.exit_code == 1
    assert "does not verify, so nothing is pruned" in refused.stderr


@pytest.mark.parametrize("tampering", ["delete_first_remaining", "slip_in_below"])
def test_removing_more_than_the_prune_did_or_adding_below_it_is_detected(
    store: Store, tampering: str
) -> None:
    ids = trail_with_an_old_open_intent(store)
    result = store.audit.prune(before=NOW - timedelta(days=400), actor="ops", now=NOW)
    assert result.removed == 5
    assert store.audit.verify().ok
    if tampering == "delete_first_remaining":
        with store.db.transaction() as tx:
            tx.execute(delete(AuditRow).where(AuditRow.id == ids["intent"]))
    else:
        forged = row(OLD, session_id="forged", prev_hash="0" * 64)
        with store.db.transaction() as tx:
            tx.add(
                AuditRow(
                    id=ids["first"],
                    hash=compute_hash(forged),
                    **{
                        **{n: getattr(forged, n) for n in ("at", "reason", "actor", "target")},
                        "kind": "skip",
                        "dry_run": False,
                        "session_id": "forged",
                        "prev_hash": "0" * 64,
                    },
                )
            )
    verdict = store.audit.verify()
    assert not verdict.ok
    expected = "prev_hash does not match" if tampering.startswith("delete") else "lies in the range"
    assert any(expected in p for p in verdict.problems), verdict.problems


def test_prune_never_removes_an_intent_without_a_final_outcome(store: Store) -> None:
    """``unknown`` and ``accepted`` outcomes leave an intent open; a final one closes it."""
    for outcome in (Outcome.UNKNOWN, Outcome.ACCEPTED, None):
        with store.db.transaction() as tx:
            tx.execute(delete(AuditRow))
        [intent] = store.audit.append(
            [row(OLD, kind=AuditKind.INTENT, session_id="s", action=Action.DELETE, reason="i")]
        )
        later: list[AuditEvent] = []
        if outcome is not None:
            later.append(
                row(OLD, kind=AuditKind.OUTCOME, outcome=outcome, intent_id=intent.id,
                    session_id="s", action=Action.DELETE, reason=str(outcome))
            )  # fmt: skip
        store.audit.append([*later, row(OLD + timedelta(hours=1), session_id="x")])
        result = store.audit.prune(before=NOW - timedelta(days=400), actor="ops", now=NOW)
        assert result.removed == 0, outcome
        assert result.held_by == intent.id
        assert store.audit.events()[0].id == intent.id
        assert store.audit.verify().ok
    with store.db.transaction() as tx:
        tx.execute(delete(AuditRow))
    [intent] = store.audit.append(
        [row(OLD, kind=AuditKind.INTENT, session_id="s", action=Action.DELETE, reason="i")]
    )
    store.audit.append(
        [
            row(OLD, kind=AuditKind.OUTCOME, outcome=Outcome.UNKNOWN, intent_id=intent.id,
                session_id="s", action=Action.DELETE, reason="timed out"),
            row(OLD, kind=AuditKind.OUTCOME, outcome=Outcome.EXECUTED, intent_id=intent.id,
                session_id="s", action=Action.DELETE, reason="reconciled: gone"),
        ]
    )  # fmt: skip
    result = store.audit.prune(before=NOW - timedelta(days=400), actor="ops", now=NOW)
    assert result.removed == 3, "a final outcome closes the intent: all of it may go"
    assert [e.kind for e in store.audit.events()] == [AuditKind.CHECKPOINT]
    assert store.audit.verify().ok


def test_incremental_verification_carries_on_across_a_prune(store: Store) -> None:
    """The daemon's incremental check: the rows it verified last may have been pruned since."""
    store.audit.append([row(OLD + timedelta(minutes=i), session_id=f"s-{i}") for i in range(4)])
    earlier = store.audit.verify()
    assert earlier.checkpoint is not None
    store.audit.prune(before=NOW - timedelta(days=400), actor="ops", now=NOW)
    store.audit.append([row(NOW, session_id="after")])
    again = store.audit.verify(since=earlier.checkpoint)
    assert again.ok, again.problems
    assert again.rows == 2  # the checkpoint and the row after it


def test_prune_needs_a_cut_off_at_least_a_day_old(store: Store, config: Path) -> None:
    result = invoke("-c", str(config), "audit", "prune", "--before", "2h")
    assert result.exit_code == 2
    assert "--before: must be at least 1d ago" in result.stderr
