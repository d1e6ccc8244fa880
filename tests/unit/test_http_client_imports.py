"""httpx's transport must not retry a failed import on every request.

httpcore 1.0.9 runs ``import sniffio`` each time it creates a lock or an event (several times
per request). Since anyio 4.11 no longer depends on sniffio, that import fails when sniffio is
absent, and Python does not cache a failed import: every request walked sys.path again, a
third of janitor's CPU per request in the fleet benchmark (encode/httpcore#1103). janitor
depends on sniffio so the import is a lookup in ``sys.modules``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

from httpcore._synchronization import current_async_library


class CountingFinder(MetaPathFinder):
    """Counts the searches for one module name (a search means: not in sys.modules)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.searches = 0

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname == self.name:
            self.searches += 1
        return None


def test_httpcore_finds_the_async_library_without_searching_for_a_module() -> None:
    import anyio

    async def detect() -> list[str]:
        return [current_async_library() for _ in range(100)]

    finder = CountingFinder("sniffio")
    sys.meta_path.insert(0, finder)
    try:
        assert anyio.run(detect) == ["asyncio"] * 100
    finally:
        sys.meta_path.remove(finder)
    assert finder.searches == 0, (
        "httpcore searched sys.path for sniffio on each call: is sniffio installed?"
    )
