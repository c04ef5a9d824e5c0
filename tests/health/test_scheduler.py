"""The debounce: live traffic forces a run after max_delay; a backfill waits to go quiet."""

from __future__ import annotations

import asyncio
from typing import Any

from services.health.scheduler import RecomputeScheduler


class CountingScheduler(RecomputeScheduler):
    """The real debounce loop; the recompute itself only counts (a pure unit of timing)."""

    def __init__(self) -> None:
        super().__init__(None, None, debounce=0.15, max_delay=0.3, interval=3600)  # type: ignore[arg-type]
        self.dirty_runs = 0

    async def recompute_dirty(self) -> None:
        self.dirty_runs += 1


async def _stream(scheduler: RecomputeScheduler, *, live: bool, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        scheduler.nudge(live)
        await asyncio.sleep(0.01)


async def _started() -> Any:
    scheduler = CountingScheduler()
    await scheduler.start()
    await asyncio.sleep(0.3)  # the start-up run for leftovers
    return scheduler


async def test_a_backfill_is_scored_once_it_goes_quiet() -> None:
    scheduler = await _started()
    try:
        before = scheduler.dirty_runs
        await _stream(scheduler, live=False, seconds=1.0)  # 3x max_delay
        assert scheduler.dirty_runs == before
        await asyncio.sleep(0.5)
        assert scheduler.dirty_runs == before + 1
    finally:
        await scheduler.stop()


async def test_live_traffic_is_scored_every_max_delay() -> None:
    scheduler = await _started()
    try:
        before = scheduler.dirty_runs
        await _stream(scheduler, live=True, seconds=1.2)
        assert scheduler.dirty_runs >= before + 2
    finally:
        await scheduler.stop()


async def test_nothing_is_scored_while_the_consumer_reports_a_backlog() -> None:
    scheduler = await _started()
    behind = True
    scheduler.backlog = lambda: behind
    try:
        before = scheduler.dirty_runs
        await _stream(scheduler, live=True, seconds=1.0)  # live, but replaying a backlog
        await asyncio.sleep(0.5)  # quiet, still behind
        assert scheduler.dirty_runs == before
        behind = False
        await asyncio.sleep(0.5)
        assert scheduler.dirty_runs == before + 1
    finally:
        await scheduler.stop()


class SlowScheduler(CountingScheduler):
    """Each rescoring run takes ``cost`` seconds."""

    def __init__(
        self, cost: float, *, live_interval: float, max_delay: float, debounce: float = 2.0
    ) -> None:
        RecomputeScheduler.__init__(
            self,
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            debounce=debounce,
            max_delay=max_delay,
            interval=3600,
            live_interval=live_interval,
        )
        self.dirty_runs = 0
        self.cost = cost
        self.run_at: list[float] = []

    async def recompute_dirty(self) -> None:
        self.run_at.append(asyncio.get_running_loop().time())
        self.dirty_runs += 1
        await asyncio.sleep(self.cost)


async def test_live_traffic_is_rescored_within_the_live_interval_not_the_debounce() -> None:
    scheduler = SlowScheduler(0.0, live_interval=0.2, max_delay=30)
    await scheduler.start()
    try:
        await asyncio.sleep(0.1)  # the start-up run
        before = scheduler.dirty_runs
        # a live stream with a 2 s debounce and 30 s cap: still rescored every ~0.2 s
        await _stream(scheduler, live=True, seconds=1.1)
        assert scheduler.dirty_runs - before >= 4
    finally:
        await scheduler.stop()


async def test_live_rescoring_is_paced_by_what_the_last_run_cost() -> None:
    scheduler = SlowScheduler(0.2, live_interval=0.05, max_delay=30, debounce=0.05)
    await scheduler.start()
    try:
        await asyncio.sleep(0.3)  # the start-up run, 0.2 s: live runs now wait >= 0.8 s
        assert scheduler.live_delay() >= 0.8
        await _stream(scheduler, live=True, seconds=2.5)
        gaps = [b - a for a, b in zip(scheduler.run_at[1:], scheduler.run_at[2:], strict=False)]
        assert gaps and min(gaps) >= 0.9  # the run's 0.2 s plus the paced 0.8 s wait
        assert len(scheduler.run_at) <= 4  # not one run per 0.05 s
    finally:
        await scheduler.stop()
