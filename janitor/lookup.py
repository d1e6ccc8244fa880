"""Finding a session by what an admin types: its id, or else its name, on one or every target.

``janitor keep`` and ``janitor explain SESSION`` take either. An id wins over a name (ids are
unique per target; names need not be); a name that several sessions share is an error that
lists them, so nobody keeps or explains the wrong one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from janitor.errors import ConfigError, NotFound, ProviderError
from janitor.model import Listing, Session
from janitor.runtime import Runtime


@dataclass(frozen=True, slots=True, kw_only=True)
class Listed:
    """One target's listing, or why there is none."""

    target: str
    listing: Listing | None
    error: str | None = None


def matching(listed: Sequence[Listed], query: str) -> list[Session]:
    """The sessions whose id is ``query``, or else those whose name is."""
    sessions = [s for item in listed if item.listing for s in item.listing.sessions]
    by_id = [s for s in sessions if s.id == query]
    return by_id or [s for s in sessions if s.name == query]


def one(found: Sequence[Session], query: str, listed: Sequence[Listed]) -> Session:
    """The one session ``found``, or an error saying where janitor looked and what it found.

    Raises:
        ConfigError: several sessions have that name (exit 2: say which one).
        NotFound: no listed session has that id or name.
    """
    if len(found) == 1:
        return found[0]
    if found:
        options = ", ".join(f"{s.target}/{s.id}" for s in found[:5])
        raise ConfigError(
            f"{len(found)} sessions are named {query!r} ({options}); pass the id, "
            "or --target, to say which"
        )
    raise not_found(query, listed)


def not_found(query: str, listed: Sequence[Listed]) -> NotFound:
    """The error for a session no listing has, saying where janitor looked."""
    looked = ", ".join(item.target for item in listed if item.listing is not None) or "nowhere"
    failed = "".join(
        f"; target {item.target} could not be listed: {item.error}" for item in listed if item.error
    )
    return NotFound(f"no session with the id or name {query!r} is listed on {looked}{failed}")


async def list_targets(rt: Runtime, only: str | None = None) -> list[Listed]:
    """Every target's listing (or ``only``'s), concurrently; failures are kept, not raised."""
    targets = [rt.config.target(only)] if only else list(rt.config.targets)

    async def one_target(name: str) -> Listed:
        try:
            return Listed(target=name, listing=await rt.providers[name].list_sessions())
        except ProviderError as exc:
            return Listed(target=name, listing=None, error=str(exc))

    return list(await asyncio.gather(*(one_target(t.name) for t in targets)))
