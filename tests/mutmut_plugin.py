"""A pytest plugin for ``make mutants`` only (``-p tests.mutmut_plugin``, set in pyproject.toml).

mutmut runs each mutant's tests with ``-x`` in an order of its own; run the fastest first (by the
durations mutmut measured in its stats run, ``mutmut-stats.json`` in its work directory), so a
mutant some quick unit test kills costs that test, not the whole integration suite before it.
Order only: which tests run, and what they assert, is unchanged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Sort the items by mutmut's measured duration when a mutant is under test."""
    del config
    stats = Path("mutmut-stats.json")
    if not os.environ.get("MUTANT_UNDER_TEST") or not stats.is_file():
        return
    durations: dict[str, float] = json.loads(stats.read_text()).get("duration_by_test", {})
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))
