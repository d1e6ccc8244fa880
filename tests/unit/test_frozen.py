"""``slot_init``: the faster ``__init__`` behaves as the one ``@dataclass`` generates."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import FrozenInstanceError, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from janitor.frozen import slot_init
from janitor.model import AuditEvent, AuditKind, Decision, History, Session, State, Verdict
from janitor.policy.conditions import Match

AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def both(**options: Any) -> tuple[type[Any], type[Any]]:
    """The same dataclass twice: as ``@dataclass`` makes it, and with :func:`slot_init`."""

    def make() -> type[Any]:
        @dataclass(frozen=True, slots=True, **options)
        class Thing:
            a: int
            b: str = "b"
            c: list[int] = field(default_factory=list)
            d: int = field(default=4, kw_only=True)
            e: int = field(default=0, kw_only=True)

            def __post_init__(self) -> None:
                if self.a < 0:
                    raise ValueError("a must not be negative")
                object.__setattr__(self, "e", self.a + self.d)

        return Thing

    return make(), slot_init(make())


def shape(cls: type[Any]) -> list[tuple[str, Any, bool]]:
    """Each parameter's name, kind and whether it has a default."""
    parameters = inspect.signature(cls).parameters.values()
    return [(p.name, p.kind, p.default is not inspect.Parameter.empty) for p in parameters]


def test_the_parameters_are_the_generated_ones() -> None:
    plain, quick = both()
    assert shape(quick) == shape(plain)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((1,), {}), ((1, "x"), {}), ((1, "x", [2]), {"d": 7}), ((2,), {"b": "y", "e": 9})],
)
def test_instances_equal_the_generated_ones(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    plain, quick = both()
    made, expected = quick(*args, **kwargs), plain(*args, **kwargs)
    assert dataclasses.astuple(made) == dataclasses.astuple(expected)
    assert repr(made).split("(", 1)[1] == repr(expected).split("(", 1)[1]
    assert made == quick(*args, **kwargs)


def test_post_init_runs_and_can_refuse() -> None:
    _, quick = both()
    assert quick(3, d=5).e == 8
    with pytest.raises(ValueError, match="negative"):
        quick(-1)


def test_each_instance_gets_its_own_default_from_the_factory() -> None:
    _, quick = both()
    first, second = quick(1), quick(1)
    first.c.append(1)
    assert second.c == []


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), ((1,), {"zzz": 1}), ((1, "b", [], 4), {}), ((1,), {"a": 1})],
)
def test_wrong_arguments_are_refused_as_by_the_generated_init(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    plain, quick = both()
    with pytest.raises(TypeError):
        plain(*args, **kwargs)
    with pytest.raises(TypeError):
        quick(*args, **kwargs)


def test_instances_stay_frozen_and_replace_works() -> None:
    _, quick = both()
    thing = quick(1)
    with pytest.raises(FrozenInstanceError):
        thing.a = 2
    changed = dataclasses.replace(thing, a=5)
    assert (changed.a, changed.e) == (5, 9)


def test_only_frozen_slotted_dataclasses_are_accepted() -> None:
    @dataclass(slots=True)
    class Thawed:
        a: int

    @dataclass(frozen=True)
    class Unslotted:
        a: int

    class Plain:
        pass

    for cls in (Thawed, Unslotted, Plain):
        with pytest.raises(TypeError, match="frozen dataclass with slots"):
            slot_init(cls)


def test_fields_outside_init_are_refused() -> None:
    @dataclass(frozen=True, slots=True)
    class Derived:
        a: int
        b: int = field(init=False, default=0)

    with pytest.raises(TypeError, match=r"Derived\.b is not a plain init field"):
        slot_init(Derived)


@pytest.mark.parametrize("cls", [Session, History, Decision, AuditEvent, Match])
def test_janitors_records_take_their_fields_in_order(cls: type[Any]) -> None:
    fields = dataclasses.fields(cls)
    parameters = list(inspect.signature(cls).parameters.values())
    assert [p.name for p in parameters] == [f.name for f in fields]
    for f, p in zip(fields, parameters, strict=True):
        assert (p.kind is inspect.Parameter.KEYWORD_ONLY) == f.kw_only
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        assert (p.default is inspect.Parameter.empty) == required


def test_janitors_records_keep_their_defaults_and_checks() -> None:
    def listed() -> Session:
        return Session(
            target="t",
            provider="p",
            id="i",
            name="n",
            kind="k",
            state=State.IDLE,
            provider_state="x",
        )

    session = listed()
    assert (session.raw, session.anomalies, session.actions) == ({}, (), None)
    assert session.raw is not listed().raw  # a fresh dict from the factory each time
    decision = Decision(session=session, verdict=Verdict.SKIP, reason="r", code="c")
    assert (decision.dry_run, decision.streak, decision.policy) == (True, 0, None)
    event = AuditEvent(at=AT, kind=AuditKind.SKIP, reason="r", actor="a", details={"k": (1, 2)})
    assert event.details == {"k": [1, 2]}  # __post_init__ still normalizes details
    with pytest.raises(ValueError, match="not JSON compliant"):
        AuditEvent(at=AT, kind=AuditKind.SKIP, reason="r", actor="a", details={"k": float("nan")})
    assert Match(True, "why") == Match(value=True, reason="why", observed=None, threshold=None)
