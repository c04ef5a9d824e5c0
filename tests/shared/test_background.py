"""Background loops stop when cancelled, even as the event they wait on is set."""

from __future__ import annotations

import asyncio

from shared.background import BackgroundTask, cancel_and_wait, finish_within, wait_for_event


async def test_a_loop_cancelled_as_its_event_is_set_stops() -> None:
    """``asyncio.wait_for(event.wait(), t)`` on Python 3.11 swallows that cancellation and
    the loop waits again, forever: ingest's drain hung its whole 60 s on it."""
    wake = asyncio.Event()

    async def run() -> None:
        while True:
            await wait_for_event(wake, 30)
            wake.clear()

    for _ in range(5):  # the race, a few times over
        task = asyncio.create_task(run())
        await asyncio.sleep(0)  # it waits
        wake.set()  # a release asked for...
        task.cancel()  # ...as the drain stops the loop
        done, _ = await asyncio.wait({task}, timeout=2)
        assert task in done, "the loop swallowed its cancellation and waits again"
    background = BackgroundTask()  # and the same through a component's stop()
    background.start("loop", run)
    await asyncio.sleep(0)
    wake.set()
    await asyncio.wait_for(background.stop(), 2)


async def test_wait_for_event_says_whether_it_was_set() -> None:
    event = asyncio.Event()
    assert await wait_for_event(event, 0.01) is False
    event.set()
    assert await wait_for_event(event, 5) is True


async def test_stop_passes_on_a_cancellation_of_its_caller() -> None:
    """A task that takes its time to wind down, and a caller cancelled while it waits (a
    shutdown deadline): the caller is cancelled, not returned to as if stopped."""
    winding_down = asyncio.Event()

    async def run() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            winding_down.set()
            await asyncio.sleep(0.5)  # a final flush
            raise

    background = BackgroundTask()
    background.start("slow-stop", run)
    await asyncio.sleep(0)
    after_stop: list[str] = []

    async def caller() -> None:
        await background.stop()
        after_stop.append("carried on")

    stopping = asyncio.create_task(caller())
    await winding_down.wait()
    stopping.cancel()
    done, _ = await asyncio.wait({stopping}, timeout=2)
    assert stopping in done and stopping.cancelled(), "stop() swallowed its caller's cancel"
    assert after_stop == []


async def test_cleanup_after_a_cancel_still_stops_every_task() -> None:
    """A caller cancelled earlier, stopping its tasks in ``finally`` (a lifespan cancelled
    at exit): every task is waited for and the cleanup after it runs; an error one task
    died of is raised once the others have finished too."""
    stopped: list[str] = []

    async def slow(name: str) -> None:
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.sleep(0.05)  # winds down
            stopped.append(name)

    async def failing() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise ValueError("died stopping") from None

    cleaned: list[str] = []

    async def owner() -> None:
        tasks = [asyncio.create_task(slow("a")), asyncio.create_task(slow("b"))]
        try:
            await asyncio.sleep(30)
        finally:
            await cancel_and_wait(*tasks)
            cleaned.append("after the tasks")

    task = asyncio.create_task(owner())
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.wait({task}, timeout=2)
    assert task.cancelled()
    assert sorted(stopped) == ["a", "b"] and cleaned == ["after the tasks"]

    first, second = asyncio.create_task(failing()), asyncio.create_task(slow("c"))
    await asyncio.sleep(0)
    try:
        await cancel_and_wait(first, second)
    except ValueError as exc:
        assert str(exc) == "died stopping"
    else:
        raise AssertionError("the task's error was not raised")
    assert second.done() and "c" in stopped


async def test_finish_within_lets_a_task_finish_and_cancels_one_past_its_time() -> None:
    async def quick() -> None:
        await asyncio.sleep(0.05)

    async def stuck() -> None:
        await asyncio.sleep(30)

    done, late = asyncio.create_task(quick()), asyncio.create_task(stuck())
    await finish_within(done, 5)
    assert done.done() and not done.cancelled()
    await finish_within(late, 0.1)
    assert late.cancelled()
    await finish_within(None, 1)  # never started: nothing to wait for
