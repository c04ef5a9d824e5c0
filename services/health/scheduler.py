"""When to recompute: soon after consumed batches touched accounts (debounced), and on a
schedule for everyone (the days move on even when no events arrive).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, date, datetime

import structlog
from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.health import repository as repo
from services.health.recompute import Recomputer
from shared.background import cancel_and_wait, wait_for_event

log = structlog.get_logger(__name__)

HEALTH_PENDING = Gauge(
    "uptake_health_accounts_pending",
    "Accounts touched but not yet judged on settled data (dirty marks), after the last run",
)


# Under live traffic a rescoring run may take at most this share of the time: the wait
# between runs grows with what the last one cost (a large base waits longer, a small one
# is rescored within a second).
RUN_SHARE = 0.2
DAY_POLL = 1.0  # seconds between looks at the clock for a new day


class RecomputeScheduler:
    """When to rescore the accounts consumed batches touched.

    Live traffic (a batch with recent events or registry changes) is what the score must
    follow at once, and it never goes quiet: it is rescored ``live_interval`` s after it
    arrives, or later when the last run was long (at most ``RUN_SHARE`` of the time spent
    rescoring), and never later than ``max_delay``. A backfill (only old events) waits
    until batches stop arriving for ``debounce`` s, and nothing is rescored while the
    consumer reports a backlog (``backlog()``: after a restart or a stall): scoring a
    half-replayed history would open alerts (everyone looks inactive) that resolve again
    minutes later. A backlog holds runs for at most ``10 x max_delay``; past that, the
    accounts whose data has not settled are scored but not alerted on (:mod:`settle`),
    and the scheduler wakes up when they have settled.
    """

    def __init__(
        self,
        recomputer: Recomputer,
        sessions: async_sessionmaker[AsyncSession],
        *,
        debounce: float,
        max_delay: float,
        interval: float,
        live_interval: float = 0.5,
        today: Callable[[], date] | None = None,
    ) -> None:
        self._recomputer = recomputer
        self._sessions = sessions
        self._debounce = debounce
        self._max_delay = max_delay
        self._interval = interval
        self._live_interval = live_interval
        self._today = today
        self._last_run_seconds = 0.0
        self._touched = asyncio.Event()
        self._live = False
        self._live_arrived = asyncio.Event()  # cuts a backfill's debounce short
        self.backlog: Callable[[], bool] = lambda: False
        self._tasks: list[asyncio.Task[None]] = []
        self.runs = 0
        self._running = False
        self._wake: asyncio.TimerHandle | None = None
        self._wake_at = 0.0

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing running (tests and probes use it)."""
        return not self._touched.is_set() and not self._running

    def nudge(self, live: bool = True) -> None:
        """A batch touched some accounts (marked dirty in the database); ``live`` = it held
        recent events or registry changes."""
        if live and not self._live:
            self._live_arrived.set()
        self._live = self._live or live
        self._touched.set()

    async def start(self) -> None:
        self._touched.set()  # dirty accounts left by a previous process
        self._tasks = [
            asyncio.create_task(self._debounced(), name="health:debounced-recompute"),
            asyncio.create_task(self._scheduled(), name="health:scheduled-recompute"),
        ]

    async def stop(self) -> None:
        if self._wake is not None:
            self._wake.cancel()
        await cancel_and_wait(*self._tasks)

    def live_delay(self) -> float:
        """How long live traffic waits for its rescoring: longer after a long run."""
        paced = self._last_run_seconds * (1 - RUN_SHARE) / RUN_SHARE
        return min(self._max_delay, max(self._live_interval, paced))

    async def _debounced(self) -> None:
        while True:
            await self._touched.wait()
            first = time.monotonic()
            while True:
                self._touched.clear()
                waited = time.monotonic() - first
                if self._live:  # a held backlog (already past the delay) checks back soon
                    pause = self.live_delay() - waited
                    await asyncio.sleep(pause if pause > 0 else max(self._live_interval, 0.05))
                else:
                    self._live_arrived.clear()
                    await wait_for_event(self._live_arrived, self._debounce)
                    if self._live:
                        continue  # live traffic came in: wait for it, not for quiet
                waited = time.monotonic() - first
                if self.backlog() and waited < 10 * self._max_delay:
                    continue
                if not self._touched.is_set():
                    break
                if self._live and waited >= self.live_delay():
                    break
            self._live = False
            started = time.monotonic()
            await self._guard(self.recompute_dirty)
            self._last_run_seconds = time.monotonic() - started

    async def _scheduled(self) -> None:
        """Everyone every ``interval`` s, and at once when the day changes: a collapse
        shows when a quiet day is over (the rules judge whole days), with no event to
        announce it."""
        day = self._today() if self._today is not None else None
        last = time.monotonic()
        while True:
            await asyncio.sleep(min(self._interval, DAY_POLL))
            new_day = self._today() if self._today is not None else None
            if time.monotonic() - last < self._interval and new_day == day:
                continue
            day, last = new_day, time.monotonic()
            await self._guard(self.recompute_all)

    async def _guard(self, job: object) -> None:
        self._running = True
        try:
            await job()  # type: ignore[operator]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("recompute.failed", error=repr(exc))
            self._touched.set()
            await asyncio.sleep(min(self._interval, 0.5))
        finally:
            self._running = False

    def _wake_when_settled(self, settles_at: datetime | None) -> None:
        """Held accounts (data not settled: :mod:`settle`) kept their dirty marks; rescore
        them as soon as the first of them settles."""
        if settles_at is None:
            return
        delay = max(0.0, (settles_at - datetime.now(UTC)).total_seconds()) + 0.05
        at = time.monotonic() + delay
        if self._wake is not None and self._wake_at <= at and self._wake_at > time.monotonic():
            return  # an earlier wake-up is already set
        if self._wake is not None:
            self._wake.cancel()
        self._wake_at = at
        self._wake = asyncio.get_running_loop().call_later(delay, self.nudge)

    async def _count_pending(self) -> None:
        async with self._sessions() as session:
            HEALTH_PENDING.set(await repo.count_dirty(session))

    async def recompute_dirty(self) -> None:
        async with self._sessions() as session:
            ids = await repo.dirty_account_ids(session)
        if ids:
            await self._recompute(ids, "recompute.dirty")
        await self._count_pending()

    async def recompute_all(self) -> None:
        await self._recompute(None, "recompute.all")
        await self._count_pending()

    async def _recompute(self, ids: list[str] | None, event: str) -> None:
        """One run: counted, a wake-up booked for what is still settling, logged."""
        result = await self._recomputer.recompute(ids)
        self.runs += 1
        self._wake_when_settled(result.settles_at)
        log.info(event, accounts=result.accounts, alerts=result.alerts, settling=len(result.held))
