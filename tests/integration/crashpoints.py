"""janitor's CLI with crash points injected through the runtime: ``python -m
tests.integration.crashpoints -c CONFIG sweep``.

``JANITOR_TEST_CRASH_AT=after_intent`` (or ``before_call``, ``after_call``) makes the process
exit at once (``os._exit(137)``, like ``kill -9``) the first time an action reaches that
point; ``stop:NAME`` stops the whole process there once (SIGSTOP) until it gets SIGCONT, as
a long GC pause or a suspended VM would. Production code only announces the points
(:class:`janitor.runtime.Hooks`); this module is what makes them crash.
"""

from __future__ import annotations

import logging
import os
import signal

from janitor.runtime import Hooks, set_default_hooks

CRASH_ENV = "JANITOR_TEST_CRASH_AT"
log = logging.getLogger("janitor.tests.crashpoints")


class CrashAt(Hooks):
    """Exits (or stops) the process at the named point."""

    def __init__(self, spec: str) -> None:
        self.spec: str | None = spec

    def at(self, point: str) -> None:
        """Crash or freeze here if the spec names this point."""
        if self.spec == point:
            log.critical("test crash point %s reached: exiting now", point)
            os._exit(137)
        if self.spec == f"stop:{point}":
            self.spec = None
            log.critical("test stop point %s reached: stopping until SIGCONT", point)
            os.kill(os.getpid(), signal.SIGSTOP)


def main() -> None:
    """Install the crash hooks named by the environment, then run janitor's CLI."""
    spec = os.environ.get(CRASH_ENV)
    if spec:
        set_default_hooks(CrashAt(spec))
    from janitor.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
