"""The composition root: settings in, a Runtime (store, providers, clock, channels) out."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import httpx

from janitor.clock import Clock, SystemClock
from janitor.notify import Alerter, Warner, Webhook
from janitor.providers import load_provider
from janitor.providers.base import Provider
from janitor.settings import Config, default_database_url
from janitor.store import Store

P = ParamSpec("P")
R = TypeVar("R")


class Hooks:
    """Named points of the action path (``after_intent``, ``before_call``, ``after_call``).

    Production code only announces the points; tests inject a subclass (through
    :func:`set_default_hooks` before the CLI builds its runtime, or ``Runtime.build``) that
    crashes or freezes the process there, like ``kill -9`` or a long GC pause.
    """

    def at(self, point: str) -> None:
        """Called when the action path reaches ``point``; does nothing here."""


_default_hooks: list[Hooks] = [Hooks()]


def set_default_hooks(hooks: Hooks) -> None:
    """The hooks every runtime built from now on gets (a seam for process-level tests)."""
    _default_hooks[0] = hooks


async def db(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run a synchronous store call off the event loop."""
    return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))


@dataclass
class Lifecycle:
    """Shutdown state shared by the daemon and the sweep."""

    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    grace: float = 5.0

    @property
    def is_stopping(self) -> bool:
        """True once SIGTERM/SIGINT arrived: no new actions."""
        return self.stopping.is_set()


def identity() -> tuple[str, str]:
    """(actor, lease holder): ``janitor@host`` and ``host:pid:random``."""
    host = socket.gethostname()
    return f"janitor@{host}", f"{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def database_url(config: Config) -> str:
    """The configured database URL, or the default SQLite file."""
    url = config.settings.database_url
    return url.get_secret_value() if url else default_database_url()


def _no_sentry(kind: str, message: str, tags: Mapping[str, str]) -> None:
    """Sentry channel used when Sentry is not configured."""


@dataclass
class Runtime:
    """Everything a sweep needs, built once per process."""

    config: Config
    store: Store
    clock: Clock
    providers: dict[str, Provider]
    warner: Warner
    alerter: Alerter
    actor: str
    holder: str
    lifecycle: Lifecycle
    hooks: Hooks = field(default_factory=Hooks)

    @classmethod
    def build(
        cls,
        config: Config,
        *,
        clock: Clock | None = None,
        store: Store | None = None,
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
        webhook_transport: httpx.AsyncBaseTransport | None = None,
        sentry: Callable[[str, str, Mapping[str, str]], None] = _no_sentry,
        hooks: Hooks | None = None,
    ) -> Runtime:
        """Connect the store and one provider per target (no network traffic yet)."""
        clock = clock or SystemClock()
        store = store or Store.open(database_url(config))
        providers: dict[str, Provider] = {}
        for target in config.targets:
            factory = load_provider(target.provider)
            transport = (transports or {}).get(target.name)
            kw: dict[str, Any] = {"transport": transport} if transport else {}
            providers[target.name] = factory.connect(target, clock, **kw)
        webhook = Webhook(config.settings.notify, transport=webhook_transport)
        actor, holder = identity()
        return cls(
            config=config,
            store=store,
            clock=clock,
            providers=providers,
            warner=Warner(webhook),
            alerter=Alerter(webhook, sentry),
            actor=actor,
            holder=holder,
            lifecycle=Lifecycle(grace=config.settings.shutdown_grace.total_seconds()),
            hooks=hooks or _default_hooks[0],
        )

    async def aclose(self) -> None:
        """Close provider clients and database connections."""
        for provider in self.providers.values():
            await provider.aclose()
        await db(self.store.close)
