"""Whether ingest takes tracking calls, and how many it has in hand.

``uptake run`` drains ingest before a stop (SIGUSR1, :mod:`shared.service`): from then
on every tracking call is answered 503 + ``Retry-After`` (SDKs retry it, against the
restarted system), and the drain waits until the calls already in hand have answered --
each only after the broker acknowledged its events -- so that nothing answered 200 is
still on its way to the broker when the consumers' lag is measured.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


class Intake:
    def __init__(self) -> None:
        self.open = True
        self._in_hand = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_hand(self) -> int:
        return self._in_hand

    @contextmanager
    def hold(self) -> Iterator[None]:
        """One tracking call, from its check of :attr:`open` to its answer."""
        self._in_hand += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_hand -= 1
            if self._in_hand == 0:
                self._idle.set()

    def close(self) -> None:
        """Refuse calls from now on; the ones in hand finish."""
        self.open = False

    async def idle(self) -> None:
        """Until no call is in hand."""
        await self._idle.wait()
