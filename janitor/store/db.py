"""The database connection: engine set-up for SQLite and PostgreSQL, schema checks, upgrades.

SQLite: every transaction starts with ``BEGIN IMMEDIATE`` (writers serialize, so the audit
chain and lease updates are atomic), WAL journal, foreign keys on, a busy timeout.
PostgreSQL: psycopg 3; plain ``postgresql://`` URLs get the driver chosen for the user.
"""

from __future__ import annotations

import importlib.resources
import logging
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, func, literal, select
from sqlalchemy.engine import URL, Connection, Row, make_url
from sqlalchemy.exc import ArgumentError, InvalidatePoolError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.sql.base import Executable

from janitor.errors import ConfigError, DatabaseMissing, SchemaOutdated, StoreError

log = logging.getLogger(__name__)

#: The execution option that marks a connection of :meth:`Database.reading`.
READ_ONLY = "janitor_read_only"
#: Execution option of :meth:`Database.read_row`: one statement, no BEGIN and no COMMIT.
ONE_STATEMENT = "janitor_one_statement"

#: Connections the pool keeps, and the most it opens: a store call beyond them waits for one
#: (up to 30 s). The pool never opens an extra connection only to close it when it comes
#: back (SQLAlchemy's ``max_overflow``): under a sweep's load that churned through a new
#: connection every six deletions, and a PostgreSQL connection is a server process forked,
#: authenticated and configured. PostgreSQL keeps the footprint it had (5 kept + 5 overflow);
#: SQLite's are file handles (SQLAlchemy's default 5 + 10).
POSTGRES_CONNECTIONS = 10
SQLITE_CONNECTIONS = 15

#: A pooled PostgreSQL connection unused this long (seconds) is pinged before it is used.
PING_AFTER_IDLE = 1.0
_RETURNED = "janitor_returned_at"

#: PostgreSQL session settings: no statement or lock wait may hang a sweep forever.
PG_TIMEOUTS = {
    "statement_timeout": "60s",
    "lock_timeout": "30s",
    "idle_in_transaction_session_timeout": "5min",
}


def advisory_xact_lock(conn: Connection | Session, name: str) -> None:
    """Take a transaction-level advisory lock named ``name`` within the current schema.

    The key hashes the name with ``current_schema()``, so two installations in different
    schemas of one database never wait on each other.
    """
    key = func.hashtextextended(literal(f"janitor.{name}:") + func.current_schema(), 0)
    conn.execute(select(func.pg_advisory_xact_lock(key)))


def normalize_url(raw: str) -> URL:
    """Parse a database URL; pick psycopg 3 for PostgreSQL; refuse other databases."""
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise ConfigError(f"database_url is not a database URL: {exc}") from None
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise ConfigError("database_url: SQLite needs a file path (sqlite:///path/to.db)")
        return url
    raise ConfigError(f"database_url: unsupported database {backend!r} (use sqlite or postgresql)")


def migrations_dir() -> Path:
    """The Alembic scripts: inside the wheel, or the checkout's ``migrations/``."""
    packaged = Path(str(importlib.resources.files("janitor"))) / "_migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    """An Alembic config built in code (no alembic.ini needed in production)."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


class Database:
    """An engine plus a session factory, with helpers for transactions and schema state."""

    def __init__(self, url: str, *, echo: bool = False, create: bool = True) -> None:
        """Connect to ``url``; with ``create=False`` (commands that only read) a SQLite file
        that does not exist is an error naming it, and neither it nor its directory is made.

        Raises:
            DatabaseMissing: ``create`` is False and the SQLite file does not exist.
        """
        self.url = normalize_url(url)
        self.dialect = self.url.get_backend_name()
        self.engine = self._make_engine(echo, create=create)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._reader = self.engine.execution_options(**{READ_ONLY: True})
        # PostgreSQL: AUTOCOMMIT, so psycopg sends no BEGIN (and no COMMIT) around the one
        # statement. SQLite: the connection already runs in autocommit mode between the BEGINs
        # janitor issues itself; the "begin" listener skips its BEGIN for this option.
        autocommit = {} if self.dialect == "sqlite" else {"isolation_level": "AUTOCOMMIT"}
        self._one_statement = self.engine.execution_options(
            **{READ_ONLY: True, ONE_STATEMENT: True}, **autocommit
        )

    @property
    def path(self) -> Path | None:
        """The SQLite file (None for PostgreSQL)."""
        if self.dialect != "sqlite" or self.url.database is None:
            return None
        return Path(self.url.database).expanduser()

    def _make_engine(self, echo: bool, *, create: bool) -> Engine:
        if self.dialect == "sqlite":
            path = self.path
            assert path is not None
            if not create and not path.exists():
                raise DatabaseMissing(
                    f"no janitor database at {path}: run `janitor db upgrade` to create it, "
                    "or check database_url"
                )
            if create:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(
                        f"cannot create the directory of {path}: {exc.strerror}"
                    ) from None
            engine = create_engine(
                self.url,
                echo=echo,
                pool_size=SQLITE_CONNECTIONS,
                max_overflow=0,
                connect_args={"timeout": 30, "check_same_thread": False},
            )
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_begin_immediate)
            return engine
        engine = create_engine(
            self.url,
            echo=echo,
            pool_size=POSTGRES_CONNECTIONS,
            max_overflow=0,
            connect_args={"connect_timeout": 5},
        )
        event.listen(engine, "connect", _postgres_on_connect)
        _ping_when_idle(engine)
        return engine

    @property
    def display_url(self) -> str:
        """The URL with the password hidden, for logs and messages."""
        return self.url.render_as_string(hide_password=True)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error.

        Raises:
            StoreError: the database failed or could not be reached.
        """
        try:
            with self.sessions() as session, session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(self.describe(exc)) from exc

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A transaction that only reads: on SQLite it begins DEFERRED instead of IMMEDIATE.

        Every writing transaction on SQLite takes the write lock at BEGIN (so writers queue
        instead of failing on a lock upgrade). A read needs no such lock: in WAL mode it sees
        the last committed state without waiting for the writer or holding it up. The checks
        made before every action (pause, policy revision, keep) read through here, so they no
        longer queue behind the audit writer. On PostgreSQL this is :meth:`transaction`.

        Raises:
            StoreError: the database failed or could not be reached.
        """
        try:
            with self.sessions(bind=self._reader) as session, session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(self.describe(exc)) from exc

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """:meth:`reading` on a bare Core connection, for the small reads made before every
        action (pause, policy revision, keep): the same DEFERRED transaction on SQLite, without
        an ORM session around it, which costs more than the read itself.

        Raises:
            StoreError: the database failed or could not be reached.
        """
        try:
            with self._reader.connect() as connection, connection.begin():
                yield connection
        except SQLAlchemyError as exc:
            raise StoreError(self.describe(exc)) from exc

    def read_row(
        self, query: Executable, params: Mapping[str, Any] | None = None
    ) -> Row[Any] | None:
        """The first row of one SELECT, read outside any explicit transaction (None: no row).

        One statement sees one consistent state on both databases (an implicit read
        transaction on SQLite, the statement's snapshot on PostgreSQL), so a read that fits in
        one statement needs no BEGIN and COMMIT around it: on PostgreSQL that is two round
        trips fewer, for the reads made before every action (the kill switch, then the kill
        switch, the policy revision and the keep together). Like :meth:`read`, it never takes
        SQLite's write lock.

        Raises:
            StoreError: the database failed or could not be reached.
        """
        try:
            with self._one_statement.connect() as connection:
                return connection.execute(query, params).first()
        except SQLAlchemyError as exc:
            raise StoreError(self.describe(exc)) from exc

    def describe(self, exc: SQLAlchemyError) -> str:
        """A database error as a sentence: the file and what to check, for SQLite's cryptic
        "unable to open database file" and "attempt to write a readonly database"."""
        text = _short(exc)
        path = self.path
        if path is not None and any(
            marker in text for marker in ("unable to open database", "readonly database")
        ):
            return (
                f"cannot open or write {path}: the file or its directory is read-only or not "
                f"permitted for this user ({text})"
            )
        return f"database error ({self.display_url}): {text}"

    def current_revision(self) -> str | None:
        """The schema revision stored in the database (None for an empty database)."""
        try:
            with self.engine.connect() as conn:
                return MigrationContext.configure(conn).get_current_revision()
        except SQLAlchemyError as exc:
            raise StoreError(self.describe(exc)) from exc

    @staticmethod
    def head_revision() -> str | None:
        """The newest revision this version of janitor ships."""
        return ScriptDirectory.from_config(alembic_config()).get_current_head()

    def schema_is_current(self) -> bool:
        """True when the database is at the head revision."""
        return self.current_revision() == self.head_revision()

    def check_schema(self) -> None:
        """Raise SchemaOutdated when the database is behind the code."""
        current, head = self.current_revision(), self.head_revision()
        if current != head:
            raise SchemaOutdated(
                f"database schema is at {current or 'nothing'}, janitor needs {head}: "
                "run `janitor db upgrade`"
            )

    def upgrade(self, revision: str = "head") -> None:
        """Apply migrations; serialized by an advisory lock on PostgreSQL."""
        try:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
                    advisory_xact_lock(conn, "migrations")
                command.upgrade(alembic_config(conn), revision)
        except SQLAlchemyError as exc:
            raise StoreError(f"database upgrade failed: {self.describe(exc)}") from exc

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _postgres_on_connect(dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
    with dbapi_conn.cursor() as cursor:
        for name, value in PG_TIMEOUTS.items():
            cursor.execute(f"SET {name} = '{value}'")
    dbapi_conn.commit()
    record.info[_RETURNED] = time.monotonic()  # it just answered


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled PostgreSQL connection before handing it out, if it sat unused in the
    pool for :data:`PING_AFTER_IDLE` seconds or more.

    SQLAlchemy's ``pool_pre_ping`` pings at every checkout: a round trip before each of the
    two or three database calls an action makes, although the connection answered a few
    milliseconds earlier. A connection goes stale while it sits in the pool (a database
    restart or failover, a proxy's idle timeout between sweeps), so only one that sat there
    a while is pinged. A failed ping invalidates the whole pool, as ``pool_pre_ping`` does,
    and SQLAlchemy retries with a fresh connection; a connection lost in the short gap
    fails its statement instead, which the store reports as a StoreError (an action then
    halts rather than call unchecked).
    """
    dialect = engine.dialect

    def returned(_dbapi: Any, record: ConnectionPoolEntry) -> None:
        record.info[_RETURNED] = time.monotonic()

    def checkout(dbapi: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection) -> None:
        if time.monotonic() - record.info.get(_RETURNED, -math.inf) < PING_AFTER_IDLE:
            return
        try:
            dialect.do_ping(dbapi)
        except dialect.loaded_dbapi.Error as exc:
            raise InvalidatePoolError(f"a pooled connection did not answer: {exc}") from exc

    event.listen(engine, "checkin", returned)
    event.listen(engine, "checkout", checkout)


def _sqlite_begin_immediate(conn: Connection) -> None:
    options = conn.get_execution_options()
    if options.get(ONE_STATEMENT, False):
        return  # Database.read_row: the statement is its own read transaction
    reading = options.get(READ_ONLY, False)
    conn.exec_driver_sql("BEGIN DEFERRED" if reading else "BEGIN IMMEDIATE")


def _short(exc: SQLAlchemyError) -> str:
    """The first line of a driver error, without the SQL statement or parameters."""
    original = getattr(exc, "orig", None) or exc
    return (
        str(original).strip().splitlines()[0][:300]
        if str(original).strip()
        else type(original).__name__
    )
