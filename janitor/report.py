"""What a sweep did, per target and in all: what ``janitor sweep`` prints and the log says."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from janitor.model import Outcome

#: Outcomes that make a target's sweep (and ``janitor sweep``, exit 1) a failure.
BAD_OUTCOMES: frozenset[str] = frozenset({Outcome.FAILED, Outcome.UNKNOWN})


@dataclass
class TargetReport:
    """What happened on one target in one sweep."""

    target: str
    listed: bool = False
    error: str | None = None
    lease_holder: str | None = None
    sessions: Counter[str] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)
    outcomes: dict[str, int] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)
    warned: int = 0
    reconciled: int = 0
    settling: int = 0
    halted: str | None = None
    store_failed: bool = False
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        """True when the target could not be swept or an action failed (or its result is
        not known)."""
        bad = sum(n for outcome, n in self.outcomes.items() if outcome in BAD_OUTCOMES)
        return self.error is not None or self.lease_holder is not None or bad > 0

    def describe(self) -> str:
        """One line about this target's sweep, for the log."""
        if self.lease_holder:
            return f"target {self.target}: swept by {self.lease_holder}, skipped"
        if not self.listed:
            return f"target {self.target}: not listed: {self.error}"
        states = ", ".join(f"{n} {s}" for s, n in sorted(self.sessions.items())) or "none"
        outcomes = ", ".join(f"{n} {o}" for o, n in sorted(self.outcomes.items())) or "no actions"
        extra = f"; {len(self.blocked)} blocked" if self.blocked else ""
        extra += f"; {self.warned} warned" if self.warned else ""
        extra += f"; {self.settling} settling" if self.settling else ""
        extra += f"; halted: {self.halted}" if self.halted else ""
        return (
            f"target {self.target}: {sum(self.sessions.values())} sessions ({states}) -> "
            f"{outcomes}{extra} in {self.seconds:.2f}s"
        )

    def summary(self) -> dict[str, object]:
        """A JSON-compatible summary of this target."""
        return {
            "target": self.target,
            "listed": self.listed,
            "error": self.error,
            "lease_holder": self.lease_holder,
            "sessions": dict(self.sessions),
            "verdicts": dict(self.verdicts),
            "outcomes": {str(k): v for k, v in self.outcomes.items()},
            "blocked": self.blocked,
            "warned": self.warned,
            "reconciled": self.reconciled,
            "settling": self.settling,
            "halted": self.halted,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class SweepReport:
    """A sweep over all (or one) targets."""

    sweep_id: str
    started_at: datetime
    dry_run: bool
    targets: list[TargetReport] = field(default_factory=list)
    seconds: float = 0.0
    store_error: str | None = None  # the sweep's own record could not be written

    @property
    def failed(self) -> bool:
        """True when any target failed, or the sweep could not be recorded: exit 1."""
        return self.store_error is not None or any(t.failed for t in self.targets)

    @property
    def status(self) -> str:
        """``ok``; ``skipped`` when the only trouble is targets another replica was sweeping
        (``janitor sweep`` still exits 1 naming the holder); else ``failed``."""
        if not self.failed:
            return "ok"
        troubled = [t for t in self.targets if t.failed]
        if self.store_error is None and all(t.lease_holder is not None for t in troubled):
            return "skipped"
        return "failed"

    def summary(self) -> dict[str, object]:
        """A JSON-compatible summary (stored with the sweep and printed by the CLI)."""
        return {
            "sweep_id": self.sweep_id,
            "dry_run": self.dry_run,
            "seconds": round(self.seconds, 3),
            "failed": self.failed,
            "status": self.status,
            "error": self.store_error,
            "targets": [t.summary() for t in self.targets],
        }
