"""Coalesce concurrent publishes into one record batch per partition.

aiokafka keeps one produce request in flight per broker and drains one batch per
partition per request. Building a batch per HTTP request (``create_batch``) therefore
sends one request's events per round trip; ``send()`` per message coalesces, but its
per-message bookkeeping is most of the CPU a 100-event request costs. A lane per
partition does both: while a batch is in flight, every caller appends to the lane's open
batch (cheap, in C), and the moment the broker answers, the open batch goes out whole.
Each caller awaits the future of the batch its messages landed in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

Headers = list[tuple[str, bytes]]


def _consume_exception(future: asyncio.Future[None]) -> None:
    """A caller that timed out no longer awaits its batch; its failure is not news."""
    if not future.cancelled():
        future.exception()


@dataclass
class _Lane:
    builder: Any = None  # aiokafka BatchBuilder being filled
    done: asyncio.Future[None] | None = None
    in_flight: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class Coalescer:
    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._lanes: dict[tuple[str, int], _Lane] = {}

    def append(
        self, topic: str, partition: int, items: Sequence[tuple[bytes, bytes]], headers: Headers
    ) -> set[asyncio.Future[None]]:
        """Add messages to the partition's open batch; returns the futures to await."""
        lane = self._lanes.setdefault((topic, partition), _Lane())
        waits: set[asyncio.Future[None]] = set()
        for key, value in items:
            if lane.builder is None:
                self._open(lane)
            if lane.builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
                self._ship(topic, partition, lane)  # full: it goes now, in flight or not
                self._open(lane)
                lane.builder.append(key=key, value=value, timestamp=None, headers=headers)
            assert lane.done is not None
            waits.add(lane.done)
        if lane.in_flight == 0 and lane.builder is not None:
            self._ship(topic, partition, lane)
        return waits

    def _open(self, lane: _Lane) -> None:
        lane.builder = self._producer.create_batch()
        lane.done = asyncio.get_running_loop().create_future()
        lane.done.add_done_callback(_consume_exception)

    def _ship(self, topic: str, partition: int, lane: _Lane) -> None:
        builder, done = lane.builder, lane.done
        lane.builder, lane.done = None, None
        lane.in_flight += 1
        task = asyncio.create_task(self._send(topic, partition, lane, builder, done))
        lane.tasks.add(task)
        task.add_done_callback(lane.tasks.discard)

    async def _send(self, topic: str, partition: int, lane: _Lane, builder: Any, done: Any) -> None:
        try:
            ack = await self._producer.send_batch(builder, topic, partition=partition)
            await ack
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
        else:
            if not done.done():
                done.set_result(None)
        finally:
            lane.in_flight -= 1
            if lane.in_flight == 0 and lane.builder is not None:
                self._ship(topic, partition, lane)

    async def drain(self) -> None:
        """Wait for every batch handed over so far (on shutdown)."""
        while tasks := [t for lane in self._lanes.values() for t in lane.tasks]:
            await asyncio.gather(*tasks, return_exceptions=True)
