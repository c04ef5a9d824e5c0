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
