"""Topic creation and broker reachability checks."""

from __future__ import annotations

import asyncio
import logging
import time

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

log = structlog.get_logger(__name__)


async def ensure_topics(
    bootstrap_servers: str, names: list[str], *, partitions: int = 6
) -> list[str]:
    """Create the topics that do not exist yet; returns the names it created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in missing]
                )
            except TopicAlreadyExistsError:
                pass  # another process won the race; the topic is there either way
            log.info("kafka.topics_created", topics=missing, partitions=partitions)
        return missing
    finally:
        await admin.close()


async def wait_for_broker(bootstrap_servers: str, *, timeout: float = 30.0) -> None:
    """Return once the broker answers a metadata request; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)  # refused connections are expected while it starts
    try:
        while time.monotonic() < deadline:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=bootstrap_servers, request_timeout_ms=2_000
            )
            try:
                await admin.start()
                await admin.list_topics()
                return
            except (KafkaError, OSError) as exc:
                last = exc
                await asyncio.sleep(0.2)
            finally:
                await admin.close()
    finally:
        client_log.setLevel(level)
    raise TimeoutError(f"Kafka at {bootstrap_servers} did not answer within {timeout}s: {last}")
