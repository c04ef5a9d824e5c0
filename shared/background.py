"""One background task a component owns: started under a name, cancelled on stop.

Several components (the audit pruner, the outbox relay, the token upkeep, the pending
releaser, the revocation watcher) each repeated the same create / cancel / await lines;
they hold one of these instead, and keep their own extra stop steps (a final flush).
"""

from __future__ import annotations

import asyncio
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
    """Cancel these tasks and wait until they have finished. Their own cancellation is
    expected and dropped; an error they died of is raised. A cancellation of the caller
    itself (a shutdown deadline) goes on up: ``suppress(CancelledError)`` around the await
    swallowed it with theirs, and the caller carried on past its deadline."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise


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
