"""The composition root: settings in, a Runtime (store, providers, clock, channels) out."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
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


#: Threads for store calls, apart from asyncio's default pool (``min(32, cpus + 4)``: 6 on a
#: 2-core host), which signing and the decision step share. Concurrent audit appends are
#: group-committed (ADR 0014): an append waiting for its batch holds a thread but no database
#: connection, and a batch can only hold the appends whose threads are waiting, so the pool
#: bounds the batch. 10 targets with 4 actions each have up to 40 action paths, each with one
#: store call at a time; 32 threads let nearly all of them wait together.
DB_THREADS = 32

_db_pool: list[ThreadPoolExecutor] = []
_db_pool_lock = threading.Lock()


def _db_executor() -> ThreadPoolExecutor:
    """The process's thread pool for store calls, made on first use."""
    with _db_pool_lock:
        if not _db_pool:
            _db_pool.append(ThreadPoolExecutor(DB_THREADS, thread_name_prefix="janitor-db"))
        return _db_pool[0]


async def db(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run a synchronous store call off the event loop, in the store's own thread pool.

    Like ``asyncio.to_thread`` (context variables included); a call already running when its
    coroutine is cancelled finishes on its own, its transaction committing or rolling back
    as a whole, and the interpreter waits for it at exit.
    """
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_db_executor(), call)


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
