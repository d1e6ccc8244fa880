"""Many rows of one statement, handed to the driver's ``executemany`` as plain tuples.

``connection.execute(insert(table), rows)`` is what a first sweep's bulk writes used: for
every row SQLAlchemy builds a parameter dictionary from the compiled statement, then a second
one through the bind processors. Over a first sweep's 300,000 rows (decisions, memory,
history) that was a tenth of janitor's CPU, in the stretch before any target's first action.

:func:`execute_many` compiles the statement once per dialect and set of columns, keeps the
bind processors SQLAlchemy itself would apply (each column type's dialect implementation:
UTC datetimes, SQLite's datetime strings, JSON), and sends the processed values in the bind
order of the compiled SQL. What is stored is the same, byte for byte (a test compares both
paths on SQLite and PostgreSQL).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.dml import UpdateBase

Processor = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A statement compiled for one dialect and one set of columns."""

    sql: str
    #: the bind names in the order the SQL's placeholders take them
    names: tuple[str, ...]
    #: (position in ``names``, processor) for the binds that have one
    processors: tuple[tuple[int, Processor], ...]
    #: True: the driver takes a mapping per row (``%(name)s``); False: a sequence (``?``)
    named: bool


#: Compiled forms by (statement, dialect, paramstyle, keys): statements are module constants,
#: so this holds a few entries per statement.
_CACHE: dict[tuple[UpdateBase, str, str, tuple[str, ...]], _Compiled] = {}


def _compile(statement: UpdateBase, dialect: Dialect, keys: tuple[str, ...]) -> _Compiled:
    cache_key = (statement, f"{dialect.name}+{dialect.driver}", dialect.paramstyle, keys)
    found = _CACHE.get(cache_key)
    if found is not None:
        return found
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    positional = compiled.positiontup
    names = tuple(positional) if positional is not None else tuple(compiled.binds)
    processors = []
    for index, name in enumerate(names):
        bind_type = compiled.binds[name].type
        processor = bind_type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            processors.append((index, processor))
    made = _Compiled(compiled.string, names, tuple(processors), positional is None)
    _CACHE[cache_key] = made
    return made


def execute_many(
    connection: Connection, statement: UpdateBase, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Execute ``statement`` (an INSERT or UPDATE with bind parameters) once per row.

    ``statement`` must be a module-level constant (its compiled forms are cached by it).
    Every row has the same keys: the columns to set and the statement's other bind
    parameters, as for ``connection.execute(statement, rows)``.
    """
    if not rows:
        return
    compiled = _compile(statement, connection.dialect, tuple(rows[0]))
    pick = operator.itemgetter(*compiled.names)
    single = len(compiled.names) == 1
    params: list[Any] = []
    for row in rows:
        values = [pick(row)] if single else list(pick(row))
        for index, processor in compiled.processors:
            values[index] = processor(values[index])
        params.append(
            dict(zip(compiled.names, values, strict=True)) if compiled.named else tuple(values)
        )
    connection.exec_driver_sql(compiled.sql, params)
