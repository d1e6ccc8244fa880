"""``janitor run``: the scheduler, signals, sd_notify and the health server.

* APScheduler's AsyncIOScheduler runs the sweep on an interval with jitter,
  ``max_instances=1`` and ``coalesce``; the first sweep runs at start. Policies are re-read
  every sweep, so edits apply without a restart.
* The database is watched every few seconds (:class:`~janitor.dbwatch.DatabaseWatch`): while
  it is down (or its schema is old) the daemon stays up, runs no sweep, is not ready, and says
  why in STATUS and the log; when it comes back, a sweep runs at once.
* After every sweep the new audit rows are verified (:class:`~janitor.chainwatch.ChainWatch`),
  and, at most once an hour, old history rows and (with ``audit_retention``) audit rows are
  pruned (:class:`~janitor.retention.Retention`).
* READY=1 once the database is checked and the scheduler started; WATCHDOG=1 only while
  the loop is healthy and no sweep overran; STATUS after every sweep; STOPPING=1 on shutdown.
* SIGTERM/SIGINT: no new actions, the call in flight gets the shutdown grace (its outcome is
  recorded, ``unknown`` if cut), then exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from datetime import UTC, datetime
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from janitor import metrics
from janitor.chainwatch import ChainWatch
from janitor.dbwatch import DatabaseWatch
from janitor.durations import format_duration
from janitor.errors import StoreError
from janitor.model import AuditEvent, AuditKind
from janitor.observability import sentry
from janitor.observability.health import Health, HealthServer
from janitor.observability.sdnotify import notify, watchdog_interval
from janitor.retention import Retention
from janitor.runtime import Runtime, db
from janitor.settings import Config
from janitor.sweep import SweepReport, run_sweep

log = logging.getLogger(__name__)


class Daemon:
    """One janitor process: owns the runtime, the scheduler, the health state and the watches."""

    def __init__(self, rt: Runtime, *, health_server: bool = True) -> None:
        self.rt = rt
        settings = rt.config.settings
        self.health = Health(
            failing_after=settings.failing_target_after.total_seconds(),
            sweep_timeout=settings.effective_sweep_timeout.total_seconds(),
            overrun_grace=2 * settings.shutdown_grace.total_seconds(),
        )
        self.server = HealthServer(settings.listen, self.health) if health_server else None
        self.db_watch = DatabaseWatch(rt.store, self.health, auto_upgrade=settings.auto_upgrade)
        self.chain_watch = ChainWatch(rt.store.audit, rt.alerter)
        self.retention = Retention(rt)
        self.scheduler: AsyncIOScheduler | None = None
        self.sweep_task: asyncio.Task[Any] | None = None
        self.ready_sent = False
        self.last_report: SweepReport | None = None

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; return the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, sig)
        if self.server:
            self.server.start()
        sentry.init_sentry(self.rt.config)
        metrics.start_series(t.name for t in self.rt.config.targets)
        self._announce()
        await self.db_watch.check()
        if self.db_watch.schema_outdated:
            log.critical(
                "refusing to start: %s (or set auto_upgrade = true)", self.health.db_problem
            )
            if self.server:
                self.server.stop()
            await self.rt.aclose()
            return 1
        await self._warn_when_idle()
        await self._start_scheduler()
        self._maybe_ready()
        tasks = [
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self.db_watch.watch(self._database_checked), name="db-watch"),
        ]
        if (interval := watchdog_interval()) is not None:
            tasks.append(asyncio.create_task(self._watchdog(interval), name="watchdog"))
        try:
            await self.rt.lifecycle.stopping.wait()
        finally:
            await self._shutdown(tasks)
        return 0

    def stop(self, sig: signal.Signals | None = None) -> None:
        """Begin shutdown: no new sweeps or actions."""
        if self.rt.lifecycle.is_stopping:
            return
        log.info(
            "received %s: finishing the action in flight, then exiting", sig.name if sig else "stop"
        )
        notify("STOPPING=1", "STATUS=stopping")
        self.health.stopping = True
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.pause()
        self.rt.lifecycle.stopping.set()

    def _announce(self) -> None:
        settings = self.rt.config.settings
        targets = ", ".join(f"{t.name} ({t.provider})" for t in self.rt.config.targets) or "none"
        log.info(
            "janitor starting: database %s, targets: %s, every %s (jitter %s)",
            self.rt.store.db.display_url,
            targets,
            format_duration(settings.sweep_interval),
            format_duration(settings.sweep_jitter),
        )
        if settings.dry_run:
            log.warning("GLOBAL DRY-RUN: no policy will act, whatever its mode")
        for warning in self.rt.config.warnings:
            log.warning("%s", warning)
        if not self.rt.config.targets:
            log.warning(
                "no targets configured in %s: janitor runs but has nothing to sweep",
                self.rt.config.source,
            )

    async def _warn_when_idle(self) -> None:
        """Say so when janitor will act on nothing: no enabled policy is stored."""
        if not self.health.db_ok:
            return
        try:
            policies = await db(self.rt.store.policies.load)
        except StoreError:
            return
        if not any(p.enabled for p in policies):
            log.warning(
                "no enabled policies: janitor lists sessions but acts on nothing; store some "
                "with `janitor policy apply -f FILE`"
            )

    async def _start_scheduler(self) -> None:
        settings = self.rt.config.settings
        interval = settings.sweep_interval.total_seconds()
        scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": max(1, int(interval)),
            },
        )
        scheduler.add_job(
            self._sweep_job,
            "interval",
            seconds=interval,
            jitter=int(settings.sweep_jitter.total_seconds()) or None,
            id="sweep",
            replace_existing=True,
            next_run_time=datetime.now(UTC),
        )
        scheduler.add_listener(self._on_job_event, EVENT_JOB_ERROR | EVENT_JOB_MAX_INSTANCES)
        scheduler.start()
        self.scheduler = scheduler

    def _on_job_event(self, event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_MAX_INSTANCES:
            # APScheduler logs its own warning; ours would repeat it every tick.
            log.debug("previous sweep still running; this run is skipped")
        elif event.exception is not None and not isinstance(
            event.exception, asyncio.CancelledError
        ):
            log.error("sweep crashed: %r", event.exception)

    async def _sweep_job(self) -> None:
        if self.rt.lifecycle.is_stopping:
            return
        if not self.health.db_ok:
            log.warning("sweep skipped: %s", self.health.db_problem)
            return
        self.sweep_task = asyncio.current_task()
        self.health.sweep_started = time.monotonic()
        started = time.monotonic()
        timeout = self.rt.config.settings.effective_sweep_timeout.total_seconds()
        try:
            async with asyncio.timeout(timeout):
                report = await run_sweep(self.rt)
        except TimeoutError:
            await self._timed_out(timeout)
            return
        finally:
            self.health.sweep_started = None
            self.sweep_task = None
        self._after_sweep(report, time.monotonic() - started)
        await self.chain_watch.verify()
        await self.retention.maybe_run()

    async def _timed_out(self, timeout: float) -> None:
        message = f"sweep cancelled after its timeout of {timeout:.0f}s"
        log.error(message)
        with contextlib.suppress(StoreError):
            await db(
                self.rt.store.audit.append,
                [
                    AuditEvent(
                        at=self.rt.clock.now(),
                        kind=AuditKind.SWEEP_ABORTED,
                        actor=self.rt.actor,
                        reason=message,
                    )
                ],
            )
        await self.rt.alerter.raise_("sweep_timeout", "sweep_timeout", message)

    def _after_sweep(self, report: SweepReport, seconds: float) -> None:
        self.last_report = report
        self.rt.alerter.clear("sweep_timeout")
        for target in report.targets:
            if target.lease_holder is None:
                self.health.target_result(target.target, not target.failed)
            if target.store_failed:
                self.health.db_ok = False
                self.health.db_problem = f"database failed during the sweep: {target.error}"
        held = [t for t in report.targets if t.lease_holder is None]
        if held:
            sentry.checkin(not any(t.failed for t in held), seconds)
        notify(f"STATUS={status_line(report)}")

    async def _heartbeat(self) -> None:
        while True:
            self.health.beat()
            await asyncio.sleep(self.health.heartbeat_period)

    async def _watchdog(self, interval: float) -> None:
        while True:
            alive, problems = self.health.liveness()
            if alive:
                notify("WATCHDOG=1")
            else:
                log.error("watchdog not fed: %s", "; ".join(problems))
            await asyncio.sleep(interval)

    def _database_checked(self, was_ok: bool) -> None:
        self._maybe_ready()
        if self.health.db_ok and not was_ok and self.scheduler is not None:
            log.info("database is back: sweeping now")
            self.scheduler.modify_job("sweep", next_run_time=datetime.now(UTC))

    def _maybe_ready(self) -> None:
        if self.health.db_ok and not self.ready_sent and self.scheduler is not None:
            notify("READY=1", "STATUS=ready; first sweep running")
            self.ready_sent = True

    async def _shutdown(self, tasks: list[asyncio.Task[Any]]) -> None:
        sweep = self.sweep_task
        if sweep is not None and not sweep.done():
            log.info("waiting for the sweep in flight to record its last outcome")
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(sweep), self.rt.lifecycle.grace + 3)
            if not sweep.done():
                sweep.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sweep
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.server:
            self.server.stop()
        await self.rt.aclose()
        sentry.flush()
        log.info("janitor stopped")


def status_line(report: SweepReport) -> str:
    """A one-line summary of a sweep for systemd's STATUS."""
    sessions = sum(sum(t.sessions.values()) for t in report.targets)
    outcomes: dict[str, int] = {}
    for target in report.targets:
        for key, value in target.outcomes.items():
            outcomes[str(key)] = outcomes.get(str(key), 0) + value
    done = ", ".join(f"{v} {k}" for k, v in sorted(outcomes.items())) or "no actions"
    failed = [t.target for t in report.targets if t.failed and t.lease_holder is None]
    tail = f"; failing: {', '.join(failed)}" if failed else ""
    return (
        f"last sweep {report.started_at:%H:%M:%S} UTC: {len(report.targets)} targets, "
        f"{sessions} sessions, {done}{tail}"
    )


def run_daemon(config: Config, **runtime_kw: Any) -> int:
    """Build the runtime and run the daemon until a signal."""

    async def main() -> int:
        rt = Runtime.build(config, sentry=sentry.capture_alert, **runtime_kw)
        try:
            daemon = Daemon(rt)
        except BaseException:
            await rt.aclose()  # e.g. the listen port is taken: close what was opened
            raise
        return await daemon.run()

    return asyncio.run(main())
