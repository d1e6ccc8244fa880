"""``observed`` (written out field by field for speed) equals its generic form, so the
fingerprints janitor's memory keeps do not change with it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from janitor.history import FIELDS, fingerprint, observed
from janitor.model import Action, Session, State

AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def generic(session: Session) -> dict[str, Any]:
    """The reference: every field of FIELDS, converted by its type."""
    values: dict[str, Any] = {}
    for name in FIELDS:
        value = getattr(session, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif name == "labels" and value is not None:
            value = dict(value)
        elif name == "anomalies":
            value = list(value)
        elif name == "actions" and value is not None:
            value = sorted(str(a) for a in value)
        elif name == "state":
            value = str(value)
        values[name] = value
    return values


texts = st.text(max_size=12)
maybe_text = st.none() | texts
times = st.none() | st.builds(
    lambda minutes, hours: (
        AT.astimezone(timezone(timedelta(hours=hours))) - timedelta(minutes=minutes)
    ),
    st.integers(-100, 100_000),
    st.integers(-12, 14),
)
sessions = st.builds(
    Session,
    target=texts,
    provider=texts,
    id=texts,
    name=texts,
    kind=texts,
    state=st.sampled_from(State),
    provider_state=texts,
    last_activity=times,
    created_at=times,
    state_since=times,
    connections=st.none() | st.integers(0, 5),
    owner=maybe_text,
    labels=st.none() | st.dictionaries(texts, texts, max_size=3),
    parent_id=maybe_text,
    anomalies=st.lists(texts, max_size=2).map(tuple),
    actions=st.none() | st.frozensets(st.sampled_from(Action)),
    warning=maybe_text,
    activity=maybe_text,
)


@given(sessions)
def test_observed_equals_the_generic_form_field_for_field(session: Session) -> None:
    fields = observed(session)
    assert fields == generic(session)
    assert list(fields) == list(FIELDS)
    assert all(type(v) in (str, int, list, dict, type(None)) for v in fields.values()), (
        "JSON-native"
    )


def test_the_fingerprint_of_a_known_session_is_unchanged() -> None:
    """Pinned: a new fingerprint for the same fields would log every session once more."""
    session = Session(
        target="t",
        provider="jupyter",
        id="s1",
        name="nb.ipynb",
        kind="notebook",
        state=State.IDLE,
        provider_state="idle",
        last_activity=AT,
        connections=0,
        labels={"kernel_name": "python3"},
        actions=frozenset({Action.DELETE, Action.NOTIFY}),
    )
    assert fingerprint(session) == PINNED


PINNED = "a4ef43a2a84a73cfca6f164d8f45cc0e"
