"""The garbage collector's settings for a sweep or the daemon (``janitor sweep``, ``janitor run``).

A sweep of a large fleet holds every listed session, decision and memory row at once (a few
hundred thousand objects) and allocates many short-lived ones per request. With CPython's
default thresholds ``(700, 10, 10)`` the collector then runs a young collection every 700 net
allocations and a full one each time the long-lived heap grew by a quarter, and each full
collection walks every object, the imported modules included: about a tenth of janitor's
CPU in the S1 benchmark (10 targets × 10,000 sessions), where janitor's CPU is what bounds
the sweep.

Reference counting frees nearly everything janitor drops; the collector only finds cycles,
which are rare and small here. So, once the process has started:

- :func:`gc.freeze` moves what start-up created (modules, classes, the configuration, the
  database engine) into the permanent generation, which no collection scans again. Those
  objects live as long as the process anyway.
- :data:`THRESHOLDS` make young collections rarer (every 5,000 net allocations) and full ones
  rarer still, so the live fleet is walked a few times per sweep instead of dozens.

Only the processes that sweep call :func:`tune_for_sweeping` (not the library or the tests).
"""

from __future__ import annotations

import gc

#: Generation thresholds for a sweeping process (CPython's default is ``(700, 10, 10)``).
THRESHOLDS = (5_000, 20, 10)


def tune_for_sweeping() -> None:
    """Freeze what start-up allocated and set :data:`THRESHOLDS`; call once, before sweeping."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
