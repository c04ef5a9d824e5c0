"""How far consumer groups are behind the end of their topics: committed offsets vs the
true end offsets.

Tansu answers ListOffsets(latest) with the base offset of a partition's last record batch
plus one, not the offset after its last record, so "caught up" read from it is declared
early. The probe keeps one group-less consumer on every partition, starts it at the end
the broker reports and reads on: its position is the true end, and each check reads only
what was appended since the last one. On Apache Kafka it reads nothing extra.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

READ_BUDGET_SECONDS = 2.0  # per check; a check that could not reach the end is unsettled


@dataclass(frozen=True)
class Lag:
    """Messages behind, per group and topic; ``settled``: the end offsets are exact (the
    probe read to the end within its budget), so a zero can be trusted."""

    behind: dict[str, dict[str, int]]
    settled: bool = True

    @property
    def total(self) -> int:
        return sum(n for topics in self.behind.values() for n in topics.values())

    @property
    def groups_behind(self) -> list[str]:
        return [g for g, topics in self.behind.items() if any(topics.values())]

    def nonzero(self) -> dict[str, dict[str, int]]:
        """Only the groups and topics that are behind."""
        return {
            g: {t: n for t, n in topics.items() if n}
            for g, topics in self.behind.items()
            if any(topics.values())
        }


class LagProbe:
    """Measures ``groups`` (group id -> the topics it reads) against the topics' true ends."""

    def __init__(self, bootstrap_servers: str, groups: Mapping[str, Sequence[str]]) -> None:
        self.groups = {g: list(t) for g, t in groups.items()}
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
        )
        self._partitions: dict[str, list[TopicPartition]] = {}
        self._begin: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        await self._admin.start()
        await self._consumer.start()
        names = {t for topics in self.groups.values() for t in topics}
        await self._consumer.topics()  # fetches the metadata of every topic
        for name in names:
            parts = self._consumer.partitions_for_topic(name) or set()
            self._partitions[name] = [TopicPartition(name, p) for p in sorted(parts)]
        tps = [tp for tps in self._partitions.values() for tp in tps]
        if not tps:
            return
        self._consumer.assign(tps)
        self._begin = await self._consumer.beginning_offsets(tps)
        reported = await self._consumer.end_offsets(tps)
        for tp in tps:
            self._consumer.seek(tp, reported[tp])

    async def stop(self) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def _ends(self) -> tuple[dict[TopicPartition, int], bool]:
        """Read on to the end of every partition; (positions, whether the end was reached)."""
        deadline = time.monotonic() + READ_BUDGET_SECONDS
        reached = False
        while time.monotonic() < deadline:
            # an empty answer after 120 ms (over two fetch waits): nothing more to read
            if not await self._consumer.getmany(timeout_ms=120, max_records=10_000):
                reached = True
                break
        tps = [tp for tps in self._partitions.values() for tp in tps]
        return {tp: await self._consumer.position(tp) for tp in tps}, reached

    async def lag(self, groups: Sequence[str] | None = None) -> Lag:
        """How far each of ``groups`` (default: all) is behind, per topic."""
        ends, reached = await self._ends()
        behind: dict[str, dict[str, int]] = {}
        for group in self.groups if groups is None else groups:
            tps = [tp for t in self.groups[group] for tp in self._partitions.get(t, [])]
            committed = await self._admin.list_consumer_group_offsets(group, partitions=tps)
            per_topic: dict[str, int] = dict.fromkeys(self.groups[group], 0)
            for tp in tps:
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else -1
                start = done if done >= 0 else self._begin.get(tp, 0)
                per_topic[tp.topic] += max(0, ends[tp] - start)
            behind[group] = per_topic
        return Lag(behind, settled=reached)
