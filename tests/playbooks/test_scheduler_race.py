"""Two schedulers racing on one PostgreSQL database send each due step exactly once
(FOR UPDATE SKIP LOCKED), and a pass whose publish fails sends nothing and marks nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from services.playbooks.app import create_app, scheduler_config
from services.playbooks.consumer import TOPICS
from services.playbooks.scheduler import StepScheduler
from shared import topics
from shared.broker import EmbeddedBroker
from shared.db import create_engine, create_sessionmaker
from shared.kafka import Publisher
from tests.playbooks.conftest import Clock, Playbooks, playbooks_settings, skip_to_end, until
from tests.support import auth, http_client, read_topic, serve_app

ACCOUNTS = 40


async def _start_groups(playbooks: Playbooks, prefix: str) -> None:
    for i in range(ACCOUNTS):
        await playbooks.alert(f"{prefix}-{i}", rule_type="expansion", owner=f"o{i}@{prefix}.test")
    await until(
        lambda: playbooks.get("/v1/task-groups", playbook_id="expansion", limit=500),
        lambda p: sum(g["account_id"].startswith(prefix) for g in p["items"]) == ACCOUNTS,
        timeout=30,
    )


@pytest.mark.postgres
async def test_two_schedulers_racing_on_postgres_send_each_due_step_once(
    broker: EmbeddedBroker,
    postgres_databases: Callable[[str], Awaitable[str]],
    tmp_path: Path,
) -> None:
    db_url = await postgres_databases("playbooks")
    clock = Clock()
    settings = playbooks_settings(
        broker.bootstrap_servers, db_url, tmp_path, PLAYBOOKS_DEFAULT_SLACK_CHANNEL="#cs"
    )
    # Only this test's messages: a new group would replay the shared broker's history
    # (every earlier test's alerts) and the schedulers would send all of it too.
    await skip_to_end(broker.bootstrap_servers, settings.consumer_group, TOPICS)
    app = create_app(settings, clock=clock)
    prefix = f"race-{uuid.uuid4().hex[:8]}"
    publisher = Publisher(broker.bootstrap_servers, client_id="tests")
    await publisher.start()
    async with (
        serve_app(app) as url,
        http_client(base_url=url, headers=auth("admin")) as client,
    ):
        playbooks = Playbooks(url, app, clock, publisher, client, broker.bootstrap_servers, db_url)
        await _start_groups(playbooks, prefix)

        config = dataclasses.replace(scheduler_config(settings), batch_size=3)
        engines = [create_engine(db_url) for _ in range(2)]
        schedulers = [
            StepScheduler(create_sessionmaker(e), publisher, config=config, clock=clock)
            for e in engines
        ]

        async def drain(scheduler: StepScheduler) -> int:
            taken = 0
            while (n := await scheduler.run_once()) > 0:
                taken += n
            return taken

        taken = await asyncio.gather(*(drain(s) for s in schedulers))
        for e in engines:
            await e.dispose()
    await publisher.stop()
    assert all(n > 0 for n in taken), taken  # both took a share of the work
    assert sum(taken) == ACCOUNTS  # one owner Slack step per group, nobody else's
    envs = await read_topic(
        broker.bootstrap_servers,
        topics.NOTIFY_REQUESTS,
        match=lambda e: e.account_id.startswith(prefix),
        count=ACCOUNTS,
        settle=1.0,
    )
    keys = Counter(e.data["idempotency_key"] for e in envs)
    assert len(keys) == ACCOUNTS and set(keys.values()) == {1}
    assert {e.data["to"][0]["slack_channel"] for e in envs} == {"#cs"}
