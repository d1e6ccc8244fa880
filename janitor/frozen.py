"""A faster ``__init__`` for the frozen, slotted dataclasses built once per session per sweep.

A frozen dataclass's generated ``__init__`` sets each field with ``object.__setattr__``
(looked up and called through the generic attribute machinery, since the class's own
``__setattr__`` refuses). On the records a sweep builds for every session (a
:class:`~janitor.model.Session`, its :class:`~janitor.model.Decision`, a condition's
``Match``, an :class:`~janitor.model.AuditEvent`) that is about half their construction time.
:func:`slot_init` gives such a class an ``__init__`` that calls each slot's own descriptor
instead: the same parameters, defaults, default factories and ``__post_init__``, and the
instances are just as frozen (``tests/unit/test_frozen.py`` holds the two to the same
behaviour).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def slot_init(cls: type[T]) -> type[T]:
    """Replace a frozen, slotted dataclass's ``__init__`` with one that sets its slots
    directly (apply it above ``@dataclass``). Refuses any other kind of class."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"slot_init needs a frozen dataclass with slots, not {cls.__name__}")
    namespace: dict[str, Any] = {"_MISSING": dataclasses.MISSING}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.init or f._field_type is not dataclasses._FIELD:  # type: ignore[attr-defined]
            raise TypeError(f"slot_init: {cls.__name__}.{f.name} is not a plain init field")
        namespace[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        if f.default is not dataclasses.MISSING:
            namespace[f"_default_{f.name}"] = f.default
            parameter = f"{f.name}=_default_{f.name}"
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"_factory_{f.name}"] = f.default_factory
            parameter = f"{f.name}=_MISSING"
            body.append(f"if {f.name} is _MISSING: {f.name} = _factory_{f.name}()")
        else:
            parameter = f.name
        (keyword if f.kw_only else positional).append(parameter)
        body.append(f"_set_{f.name}(self, {f.name})")
    if hasattr(cls, "__post_init__"):
        body.append("self.__post_init__()")
    body = body or ["pass"]
    signature = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    source = f"def __init__({signature}):\n" + "".join(f"    {line}\n" for line in body)
    exec(source, namespace)  # noqa: S102 (generated from the class's own fields, like dataclasses)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
