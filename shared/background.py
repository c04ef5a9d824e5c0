"""One background task a component owns: started under a name, cancelled on stop.

Several components (the audit pruner, the outbox relay, the token upkeep, the pending
releaser, the revocation watcher) each repeated the same create / cancel / await lines;
they hold one of these instead, and keep their own extra stop steps (a final flush).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any


async def wait_for_event(event: asyncio.Event, timeout: float) -> bool:
    """Until ``event`` is set (True) or ``timeout`` s have passed (False).

    Background loops wait with this, never ``asyncio.wait_for(event.wait(), ...)``: on
    Python 3.11 that swallows a cancellation arriving as the event is set, and a loop
    cancelled that way never stops (ingest's drain hung for its whole 60 s on it when a
    Ctrl-C'd import had just asked for a release)."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel these tasks and wait until every one has finished; the first error one died
    of (other than its cancellation) is raised then. A cancellation of the caller (a
    shutdown deadline) goes on up at once: ``suppress(CancelledError)`` around awaiting
    a cancelled task swallowed it with the task's own, and the caller carried on past its
    deadline. A caller already being cancelled (cleaning up in ``finally``) still waits."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    await asyncio.wait(tasks)  # raises only if the caller is cancelled while it waits
    for task in tasks:
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error


async def finish_within(task: asyncio.Future[Any] | None, seconds: float) -> None:
    """Let a task that was asked to stop finish (its batch or sends in hand) for up to
    ``seconds``; past that ``wait_for`` cancels it and waits for the cancellation."""
    if task is None:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(task, timeout=seconds)


class BackgroundTask:
    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def start(self, name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._task = asyncio.create_task(run(), name=name)

    async def stop(self) -> None:
        """Cancel and wait for the task; a no-op before start. An error it died of
        (other than the cancellation) is raised here."""
        if self._task is not None:
            await cancel_and_wait(self._task)
