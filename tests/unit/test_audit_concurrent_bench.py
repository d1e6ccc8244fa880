"""The concurrent-appenders audit benchmark still runs: tiny sizes, no timing assertions."""

from __future__ import annotations

import pytest

from benchmarks import audit


@pytest.mark.parametrize("how", ["serial", "group", "async"])
def test_concurrent_appenders_build_a_verified_chain(how: str) -> None:
    (result,) = audit.run([audit.Concurrent(threads=3, per_thread=4, how=how)])
    assert result.case == f"sqlite 3 appenders x 4 {how}"
    assert result.count == 12
    assert result.extra["appenders"] == 3
    assert 1 <= int(result.extra["transactions"]) <= 12 + 3  # the leases' own commits aside
