"""Topic creation and broker reachability checks."""

from __future__ import annotations

import asyncio
import logging
import time

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from shared import topics

log = structlog.get_logger(__name__)


async def ensure_topics(
    bootstrap_servers: str,
    names: list[str],
    *,
    partitions: int = 6,
    configs: dict[str, dict[str, str]] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; returns the names it created.

    ``configs`` gives some topics settings (``cleanup.policy=compact``); a broker that
    refuses a setting still gets the topic, without it (logged).
    """
    configs = configs if configs is not None else topics.TOPIC_CONFIGS
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        for name in missing:
            await _create(admin, name, partitions, configs.get(name, {}))
        if missing:
            log.info("kafka.topics_created", topics=missing, partitions=partitions)
        return missing
    finally:
        await admin.close()


async def _create(
    admin: AIOKafkaAdminClient, name: str, partitions: int, config: dict[str, str]
) -> None:
    def new(cfg: dict[str, str]) -> NewTopic:
        return NewTopic(name, num_partitions=partitions, replication_factor=1, topic_configs=cfg)

    error = await _create_error(admin, new(config))
    if error and config:
        log.warning("kafka.topic_config_refused", topic=name, config=config, error_code=error)
        error = await _create_error(admin, new({}))
    if error:
        raise KafkaError(f"creating topic {name} failed: error code {error}")


async def _create_error(admin: AIOKafkaAdminClient, topic: NewTopic) -> int:
    """The broker's error code for one topic (0: created or already there: a race lost)."""
    try:
        response = await admin.create_topics([topic])
    except TopicAlreadyExistsError:
        return 0
    for _name, code, *_ in response.topic_errors:
        if code not in (0, TopicAlreadyExistsError.errno):
            return int(code)
    return 0


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
