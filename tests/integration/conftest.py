"""Fixtures shared by the tests that run janitor as real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from janitor.sim.jupyter import SimServer
from tests.integration.procs import Procs, stop_servers


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Janitor processes, all killed at the end of the test."""
    with Procs(tmp_path) as running:
        yield running


@pytest.fixture
def serve() -> Iterator[list[SimServer]]:
    """Serve simulators over loopback; every server is stopped afterwards."""
    servers: list[SimServer] = []
    yield servers
    stop_servers(servers)
