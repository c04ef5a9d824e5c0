"""The delivery log under stress: exclusive claims, a crash mid-send, poison requests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.notify import repository
from services.notify.consumer import delivery_rows
from services.notify.settings import NotifySettings
from services.notify.worker import DeliveryWorker
from shared import topics
from shared.broker import EmbeddedBroker
from shared.db import create_engine, create_sessionmaker
from shared.envelope import Envelope, wrap
from shared.kafka import Publisher
from shared.messages import Recipient
from shared.migrations import upgrade_async
from tests.notify.conftest import (
    NotifyHarness,
    SmtpServer,
    new_account,
    new_email,
    publish,
    publish_raw,
    read_dead_letters,
    request,
)
from tests.support import read_topic

NOW = datetime.now(UTC)


def rows_for(emails: list[str], account: str = "acct-x") -> list[dict[str, object]]:
    req = request(to=[Recipient(email=e) for e in emails])
    env = wrap(req, type="notify.requested", account_id=account, source="tests")
    return delivery_rows(req, env, now=NOW - timedelta(seconds=1), default_channel="#d")


async def test_concurrent_claims_never_overlap(
    database_url: Callable[[str], Awaitable[str]],
) -> None:
    url = await database_url("notify")
    await upgrade_async("notify", url)
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    try:
        async with sessions() as session, session.begin():
            await repository.insert_deliveries(
                session, rows_for([f"u{i}@x.test" for i in range(40)])
            )

        async def claim() -> list[str]:
            async with sessions() as session, session.begin():
                got = await repository.claim_due(
                    session, now=NOW, lease_until=NOW + timedelta(minutes=5), limit=15
                )
            return [d.id for d in got]

        claims = await asyncio.gather(*(claim() for _ in range(4)))
        flat = [i for c in claims for i in c]
        assert len(flat) == len(set(flat)) == 40  # every row claimed once, by one claimer
        assert all(len(c) <= 15 for c in claims)
        async with sessions() as session:
            again = await repository.claim_due(
                session, now=NOW, lease_until=NOW + timedelta(minutes=5), limit=15
            )
        assert again == []  # leased rows are not claimable until the lease runs out
        async with sessions() as session, session.begin():
            later = NOW + timedelta(minutes=6)
            stale = await repository.claim_due(session, now=later, lease_until=later, limit=100)
        assert len(stale) == 40
    finally:
        await engine.dispose()


async def test_a_batch_past_the_drivers_bind_limits_is_stored_whole(
    database_url: Callable[[str], Awaitable[str]],
) -> None:
    """1,500 rows x 24 columns is past asyncpg's 32,767 and SQLite's 32,766 parameters."""
    url = await database_url("notify")
    await upgrade_async("notify", url)
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    rows = rows_for([f"u{i}@x.test" for i in range(1500)])
    assert len(rows) * len(rows[0]) > 32_767
    try:
        async with sessions() as session, session.begin():
            first = await repository.insert_deliveries(session, rows)
        async with sessions() as session, session.begin():
            again = await repository.insert_deliveries(session, [{**rows[7], "id": "other"}])
    finally:
        await engine.dispose()
    assert sorted(first) == sorted(str(r["id"]) for r in rows)
    assert again == []  # (idempotency key, recipient) is taken
    # each row keeps only its own recipient: storage grows with recipients, not their square
    kept = Envelope.parse(rows[0]["request_envelope"])  # type: ignore[arg-type]
    assert kept.data["to"] == [
        {
            "email": "u0@x.test",
            "name": None,
            "role": None,
            "slack_channel": None,
            "contact_id": None,
        }
    ]


async def test_a_send_interrupted_by_a_crash_is_resent_with_the_same_message_id(
    harness: NotifyHarness, smtp: SmtpServer
) -> None:
    crashed, busy = new_email("crashed"), new_email("busy")
    await upgrade_async("notify", harness.db_url)
    engine = create_engine(harness.db_url)
    sessions = create_sessionmaker(engine)
    rows = rows_for([crashed, busy])
    # As a process that died mid-send leaves them: one lease ran out, one still held.
    async with sessions() as session, session.begin():
        await repository.insert_deliveries(session, rows)
        await repository.set_delivery(
            session, str(rows[0]["id"]), status="sending", lease_until=NOW - timedelta(seconds=5)
        )
        await repository.set_delivery(
            session, str(rows[1]["id"]), status="sending", lease_until=NOW + timedelta(hours=1)
        )
    await engine.dispose()
    await harness.start()
    [got] = await smtp.inbox.wait_for(crashed, 1)
    assert got.message["Message-ID"] == f"<{rows[0]['id']}@acme.test>"
    await asyncio.sleep(1.0)  # several worker ticks (0.2 s apart): the held lease holds
    assert smtp.inbox.to(busy) == []


async def test_poison_requests_are_dead_lettered_and_the_rest_flows(
    harness: NotifyHarness, smtp: SmtpServer, broker: EmbeddedBroker
) -> None:
    account, ada = new_account(), new_email()
    await harness.start()
    missing_channel = Envelope(
        type="notify.requested",
        occurred_at=NOW,
        source="tests",
        account_id=account,
        data={"idempotency_key": f"k-{uuid.uuid4().hex}", "template_id": "welcome", "to": []},
    )
    await publish_raw(broker, missing_channel)
    too_long = request(to=[Recipient(email="a" * 400 + "@x.test")])
    crowd = request(to=[Recipient(email=f"u{i}@x.test") for i in range(1001)])
    crowd_to = [r.model_dump(mode="json") for r in crowd.to]
    await publish(broker, account, too_long, crowd, request(to=[Recipient(email=ada)]))
    await smtp.inbox.wait_for(ada, 1)
    dead = await read_topic(
        broker.bootstrap_servers,
        topics.dlq(topics.NOTIFY_REQUESTS),
        match=lambda e: e.account_id == account,
        count=3,
        settle=0.3,
    )
    assert {e.data["idempotency_key"] for e in dead} == {
        missing_channel.data["idempotency_key"],
        too_long.idempotency_key,
        crowd.idempotency_key,
    }
    [crowd_dead] = [
        d for d in await read_dead_letters(broker, account, 3) if d.envelope.data["to"] == crowd_to
    ]
    assert crowd_dead.headers["x-error"] == (
        "invalid notify.requested: to has 1001 recipients, more than 1000"
    )


async def test_a_live_worker_renews_its_leases(tmp_path: Path) -> None:
    """A slow send keeps its claim: the lease is renewed while the process lives."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'notify.db'}"
    await upgrade_async("notify", url)
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    settings = NotifySettings(NOTIFY_DATABASE_URL=url, NOTIFY_SEND_LEASE=1.0)  # type: ignore[call-arg]
    worker = DeliveryWorker(
        sessions=sessions, publisher=Publisher("127.0.0.1:1", client_id="t"), settings=settings
    )
    try:
        async with sessions() as session, session.begin():
            await repository.insert_deliveries(session, rows_for(["slow@x.test"]))
            now = datetime.now(UTC)
            [held] = await repository.claim_due(
                session, now=now, lease_until=now + timedelta(seconds=1), limit=10
            )
        worker._inflight.add(held.id)  # as run_due does while the send is under way
        renew = asyncio.create_task(worker._heartbeat())
        await asyncio.sleep(2.0)  # twice the lease
        async with sessions() as session, session.begin():
            stolen = await repository.claim_due(
                session, now=datetime.now(UTC), lease_until=datetime.now(UTC), limit=10
            )
        assert stolen == []
        worker._inflight.clear()  # the send finished (or the process died): no more renewal
        await asyncio.sleep(1.5)
        async with sessions() as session, session.begin():
            later = datetime.now(UTC)
            [again] = await repository.claim_due(session, now=later, lease_until=later, limit=10)
        assert again.id == held.id
        worker._stopping.set()
        await renew
    finally:
        await worker.slack.close()
        await engine.dispose()
