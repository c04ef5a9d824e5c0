"""The per-account cap beside the per-contact one: extra automated emails are deferred,
never dropped, and sent once the window allows; both caps hold with two workers racing
on one PostgreSQL database. Real broker, aiosmtpd, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from services.notify import repository
from services.notify.consumer import delivery_rows
from services.notify.models import Delivery
from services.notify.worker import DeliveryWorker
from shared.broker import EmbeddedBroker
from shared.db import create_engine, create_sessionmaker
from shared.envelope import wrap
from shared.kafka import Publisher
from shared.messages import Recipient
from shared.migrations import upgrade_async
from tests.conftest import DatabaseFactory
from tests.e2e.flows import eventually
from tests.notify.conftest import (
    NotifyHarness,
    SmtpServer,
    new_account,
    new_email,
    notify_settings,
    publish,
    request,
)
from tests.support import auth, http_client

WINDOW = 4.0  # seconds: NOTIFY_ACCOUNT_CAP_WINDOW in the first test


def _key(step: str) -> str:
    return f"tg-{uuid.uuid4().hex[:8]}:{step}"


async def test_the_account_cap_defers_the_extra_email_and_sends_it_when_the_window_allows(
    harness: NotifyHarness, smtp: SmtpServer, broker: EmbeddedBroker
) -> None:
    base = await harness.start(NOTIFY_ACCOUNT_CAP=2, NOTIFY_ACCOUNT_CAP_WINDOW=WINDOW)
    account = new_account()
    ada, bob, cy, dee = (new_email(n) for n in ("ada", "bob", "cy", "dee"))
    first, second, third = _key("welcome"), _key("checkin"), _key("reengagement")
    # One request to two people takes one slot of the account (its co-recipients share it).
    await publish(
        broker,
        account,
        request(key=first, to=[Recipient(email=ada, name="Ada"), Recipient(email=bob, name="Bob")]),
    )
    await smtp.inbox.wait_for(ada, 1)
    await smtp.inbox.wait_for(bob, 1)
    await publish(broker, account, request(key=second, to=[Recipient(email=cy, name="Cy")]))
    await smtp.inbox.wait_for(cy, 1)
    # The account had two automated emails in the window: the third waits, it is not dropped.
    await publish(broker, account, request(key=third, to=[Recipient(email=dee, name="Dee")]))
    [got] = await smtp.inbox.wait_for(dee, 1, timeout=WINDOW + 20)
    assert got.message["To"].addresses[0].addr_spec == dee

    async def all_sent() -> dict[tuple[str, str], dict[str, Any]] | None:
        """The account's deliveries once each is stored as sent (the SMTP server sees a
        message a moment before the worker records it)."""
        async with http_client(base_url=base) as client:
            r = await client.get(
                "/v1/deliveries", params={"account_id": account, "limit": 10}, headers=auth("read")
            )
        assert r.status_code == 200, r.text
        found = {(d["idempotency_key"], d["recipient"]): d for d in r.json()["items"]}
        return found if {d["status"] for d in found.values()} == {"sent"} else None

    rows = await eventually(all_sent, timeout=10, what="every delivery stored as sent")
    assert len(rows) == 4
    late = rows[(third, dee)]
    assert late["deferrals"] == 1 and late["last_error"].startswith("account cap: next allowed")
    assert rows[(second, cy)]["deferrals"] == 0  # the two-recipient request counted once
    opened = datetime.fromisoformat(rows[(first, ada)]["created_at"])
    assert datetime.fromisoformat(late["sent_at"]) >= opened + timedelta(seconds=WINDOW)
    assert len(smtp.inbox.to(dee)) == 1


@pytest.mark.postgres
async def test_both_caps_hold_with_two_workers_racing_on_one_postgres_database(
    postgres_databases: DatabaseFactory, smtp: SmtpServer, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    url = await postgres_databases("notify")
    await upgrade_async("notify", url)
    settings = notify_settings(
        broker.bootstrap_servers,
        url,
        tmp_path,
        SMTP_HOST=smtp.host,
        SMTP_PORT=smtp.port,
        NOTIFY_ACCOUNT_CAP=3,
        NOTIFY_ACCOUNT_CAP_WINDOW=3600,
        NOTIFY_FREQUENCY_CAP=1,
        NOTIFY_FREQUENCY_CAP_WINDOW=3600,
    )
    now = datetime.now(UTC)
    busy_account = new_account()
    busy_people = [new_email(f"p{i}") for i in range(20)]
    busy_contact = new_email("popular")  # one address at ten accounts
    requests = [
        (busy_account, request(key=_key(f"s{i}"), to=[Recipient(email=e, name=f"P{i}")]))
        for i, e in enumerate(busy_people)
    ] + [
        (new_account(), request(key=_key(f"t{i}"), to=[Recipient(email=busy_contact, name="Pop")]))
        for i in range(10)
    ]
    engines = [create_engine(url, pool_size=4) for _ in range(2)]
    sessions = [create_sessionmaker(e) for e in engines]
    async with sessions[0]() as session, session.begin():
        for account, req in requests:
            env = wrap(req, type="notify.requested", account_id=account, source="tests")
            rows = delivery_rows(req, env, now=now, default_channel="#cs")
            await repository.insert_deliveries(session, rows)
    publisher = Publisher(broker.bootstrap_servers, client_id="tests-caps")
    await publisher.start()
    # Two replicas: each its own engine (connection pool) and worker, claiming five at a time
    # (and sending those to different people concurrently).
    workers = [
        DeliveryWorker(sessions=s, publisher=publisher, settings=settings, batch_size=5)
        for s in sessions
    ]
    try:
        while sum(await asyncio.gather(*(w.run_due() for w in workers))):
            pass
    finally:
        await publisher.stop()
    async with sessions[0]() as session:
        log = list(await session.scalars(select(Delivery)))
    for engine in engines:
        await engine.dispose()
    busy = [d for d in log if d.account_id == busy_account]
    popular = [d for d in log if d.recipient == busy_contact]
    assert sorted(d.status for d in busy) == ["deferred"] * 17 + ["sent"] * 3
    assert sorted(d.status for d in popular) == ["deferred"] * 9 + ["sent"]
    assert sum(len(smtp.inbox.to(e)) for e in busy_people) == 3
    assert len(smtp.inbox.to(busy_contact)) == 1
    # Deferred to when a slot frees (the first slot's time + the window), never dropped.
    for d in busy + popular:
        if d.status == "deferred":
            assert d.next_attempt_at > now + timedelta(seconds=3500)
            assert d.last_error is not None and "cap: next allowed" in d.last_error
