"""Parked events: bounded by age and count, never silently dropped, released after a
restart. Real broker, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest.app import create_app
from services.ingest.models import UserAccount, UserMembership
from services.ingest.pending import PendingReleaser
from services.ingest.settings import IngestSettings
from shared import topics
from shared.broker import EmbeddedBroker
from shared.db import create_engine, create_sessionmaker
from shared.envelope import Envelope
from shared.kafka import Publisher
from shared.messages import UsageEvent
from tests.e2e.flows import eventually
from tests.ingest.conftest import ingest_settings
from tests.support import auth, http_client, read_topic, serve_app

DatabaseUrl = Callable[[str], Awaitable[str]]


@asynccontextmanager
async def ingest_api(settings: IngestSettings) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """The ingest service on loopback and a client holding the ingest key."""
    async with (
        serve_app(create_app(settings)) as url,
        http_client(base_url=url, headers=auth("ingest")) as client,
    ):
        yield url, client


async def account_events(
    broker: EmbeddedBroker,
    account: str,
    *,
    count: int,
    timeout: float = 15.0,
    settle: float = 0.0,
) -> list[Envelope]:
    """The first ``count`` usage events of ``account`` on the usage topic."""
    return await read_topic(
        broker.bootstrap_servers,
        topics.USAGE_EVENTS,
        match=lambda e: e.account_id == account,
        count=count,
        timeout=timeout,
        settle=settle,
    )


def track(user: str, at: datetime, event: str = "Report Created") -> dict[str, Any]:
    return {
        "type": "track",
        "userId": user,
        "event": event,
        "messageId": uuid.uuid4().hex,
        "timestamp": at.isoformat(),
    }


async def pending_of(url: str, key: str) -> dict[str, Any] | None:
    async with http_client(base_url=url, headers=auth("admin")) as client:
        r = await client.get("/v1/pending", params={"limit": 1000})
    assert r.status_code == 200, r.text
    found = [u for u in r.json()["items"] if u["user_key"] == key]
    return found[0] if found else None


def expired_total(metrics: str) -> float:
    match = re.search(r"^uptake_ingest_pending_expired_total (\S+)$", metrics, re.M)
    return float(match.group(1)) if match else 0.0


async def test_parked_events_survive_a_restart(
    broker: EmbeddedBroker, database_url: DatabaseUrl, tmp_path: Path
) -> None:
    url = await database_url("ingest")
    # chunks of 2: the release of 5 events takes three chunks, each published then deleted
    settings = ingest_settings(
        broker.bootstrap_servers, url, tmp_path, INGEST_PENDING_RELEASE_CHUNK=2
    )
    run = uuid.uuid4().hex[:8]
    account, user = f"restart-{run}", f"ru-{run}"
    other_account, other = f"crash-{run}", f"cu-{run}"
    start = datetime.now(UTC) - timedelta(hours=2)
    sent = [track(user, start + timedelta(minutes=i)) for i in range(5)]
    async with ingest_api(settings) as (first, client):
        r = await client.post("/v1/batch", json={"batch": sent})
        assert r.status_code == 200, r.text
        r = await client.post("/v1/track", json=track(other, start))
        assert r.status_code == 200, r.text
        assert (await pending_of(first, f"u:{user}") or {}).get("events") == 5
    # As if a replica committed a link and died before releasing: only the table knows.
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    session: AsyncSession
    async with sessions() as session, session.begin():
        now = datetime.now(UTC)
        session.add(
            UserAccount(
                user_key=f"u:{other}", account_id=other_account, updated_at=now, linked_at=now
            )
        )
        session.add(UserMembership(user_key=f"u:{other}", account_id=other_account, created_at=now))
    await engine.dispose()

    # a new app instance on the same database
    async with ingest_api(settings) as (second, client):
        r = await client.post("/v1/group", json={"userId": user, "groupId": account})
        assert r.status_code == 200, r.text
        released = await account_events(
            broker,
            account,
            count=5,
            timeout=20,
            settle=0.5,
        )
        [swept] = await account_events(
            broker,
            other_account,
            count=1,
            timeout=20,
        )
        assert await pending_of(second, f"u:{user}") is None
        assert await pending_of(second, f"u:{other}") is None
    events = [e.payload(UsageEvent) for e in released]
    # the original message ids and timestamps, each once
    assert sorted(e.message_id for e in events) == sorted(c["messageId"] for c in sent)
    assert sorted(e.timestamp for e in events) == [start + timedelta(minutes=i) for i in range(5)]
    assert swept.payload(UsageEvent).user_id == other


async def test_a_user_never_linked_ends_on_the_unattributed_topic(
    broker: EmbeddedBroker, database_url: DatabaseUrl, tmp_path: Path
) -> None:
    settings = ingest_settings(
        broker.bootstrap_servers,
        await database_url("ingest"),
        tmp_path,
        INGEST_PENDING_MAX_AGE=1,
        INGEST_PENDING_SWEEP_INTERVAL=0.2,
    )
    user = f"never-{uuid.uuid4().hex[:8]}"
    calls = [track(user, datetime.now(UTC)) for _ in range(3)]
    async with ingest_api(settings) as (url, client):
        before = expired_total((await client.get("/metrics")).text)
        r = await client.post("/v1/batch", json={"batch": calls})
        assert r.status_code == 200, r.text
        unattributed = await read_topic(
            broker.bootstrap_servers,
            topics.USAGE_UNATTRIBUTED,
            match=lambda e: e.data.get("user_id") == user,
            count=3,
            timeout=20,
            settle=0.5,
        )

        async def counted() -> bool:
            return expired_total((await client.get("/metrics")).text) >= before + 3

        await eventually(counted, timeout=10, what="the expired counter")
        assert await pending_of(url, f"u:{user}") is None
    assert sorted(e.data["message_id"] for e in unattributed) == sorted(
        c["messageId"] for c in calls
    )
    assert {e.type for e in unattributed} == {"usage.unattributed"}
    assert {e.data["user_key"] for e in unattributed} == {f"u:{user}"}
    assert {e.account_id for e in unattributed} == {f"u:{user}"}  # no account: the user key


async def test_a_user_over_the_parking_limit_gets_429_until_linked(
    broker: EmbeddedBroker, database_url: DatabaseUrl, tmp_path: Path
) -> None:
    settings = ingest_settings(
        broker.bootstrap_servers,
        await database_url("ingest"),
        tmp_path,
        INGEST_PENDING_MAX_EVENTS=3,
    )
    run = uuid.uuid4().hex[:8]
    account, user, linked = f"limit-{run}", f"lu-{run}", f"ok-{run}"
    now = datetime.now(UTC)
    calls = [track(user, now - timedelta(minutes=10 - i)) for i in range(5)]
    async with ingest_api(settings) as (url, client):
        assert (
            await client.post("/v1/group", json={"userId": linked, "groupId": account})
        ).is_success
        mixed = [*calls, track(linked, now)]  # another user's event in the same batch
        r = await client.post("/v1/batch", json={"batch": mixed})
        assert r.status_code == 429, r.text
        assert int(r.headers["Retry-After"]) > 0
        assert [x["index"] for x in r.json()["rejected"]] == [3, 4]
        assert "parked" in r.json()["detail"]
        again = await client.post("/v1/track", json=track(user, now))
        assert again.status_code == 429 and "Retry-After" in again.headers
        # what is parked already is no new event: re-sending it is a 200
        resent = await client.post("/v1/batch", json={"batch": calls[:3]})
        assert resent.status_code == 200, resent.text
        assert (await pending_of(url, f"u:{user}") or {}).get("events") == 3
        # the group call releases the three; the SDK's retry of the rest now goes through
        assert (
            await client.post("/v1/group", json={"userId": user, "groupId": account})
        ).is_success
        retried = await client.post("/v1/batch", json={"batch": mixed})
        assert retried.status_code == 200, retried.text
        published = await read_topic(
            broker.bootstrap_servers,
            topics.USAGE_EVENTS,
            match=lambda e: e.account_id == account and e.data.get("user_id") == user,
            count=8,  # 3 released + 5 from the retry (3 of them duplicates, deduped downstream)
            timeout=20,
            settle=0.5,
        )
    ids = {e.payload(UsageEvent).message_id for e in published}
    assert ids == {c["messageId"] for c in calls}
    assert len(published) == 8


async def test_alias_attributes_events_sent_under_the_previous_id(
    broker: EmbeddedBroker, database_url: DatabaseUrl, tmp_path: Path
) -> None:
    settings = ingest_settings(broker.bootstrap_servers, await database_url("ingest"), tmp_path)
    run = uuid.uuid4().hex[:8]
    account, user, anon = f"alias-{run}", f"au-{run}", f"visitor-{run}"
    now = datetime.now(UTC)
    async with ingest_api(settings) as (url, client):
        assert (
            await client.post("/v1/group", json={"userId": user, "groupId": account})
        ).is_success
        before = {"anonymousId": anon, "event": "Viewed Pricing", "timestamp": now.isoformat()}
        assert (await client.post("/v1/track", json=before)).status_code == 200
        assert (await pending_of(url, f"a:{anon}") or {}).get("events") == 1
        bad = await client.post("/v1/alias", json={"userId": user})
        assert bad.status_code == 400 and "previousId" in bad.json()["detail"]
        r = await client.post("/v1/alias", json={"previousId": anon, "userId": user})
        assert r.status_code == 200, r.text
        [released] = await account_events(
            broker,
            account,
            count=1,
            timeout=20,
        )
        # and from now on, the anonymous id's events go straight to the account
        later = {"anonymousId": anon, "event": "Viewed Docs"}
        assert (await client.post("/v1/track", json=later)).status_code == 200
        assert await pending_of(url, f"a:{anon}") is None
    assert released.payload(UsageEvent).event == "Viewed Pricing"
    [_, direct] = await account_events(
        broker,
        account,
        count=2,
    )
    assert direct.payload(UsageEvent).event == "Viewed Docs"


async def test_two_replicas_release_a_backlog_once_each_on_postgres(
    broker: EmbeddedBroker, database_url: DatabaseUrl, tmp_path: Path
) -> None:
    """Both replicas release at once; on PostgreSQL the row locks (SKIP LOCKED) give each
    parked row to one of them, elsewhere duplicates are allowed (message ids dedupe)."""
    url = await database_url("ingest")
    settings = ingest_settings(
        broker.bootstrap_servers, url, tmp_path, INGEST_PENDING_RELEASE_CHUNK=5
    )
    run = uuid.uuid4().hex[:8]
    account, user = f"replicas-{run}", f"rep-{run}"
    now = datetime.now(UTC)
    sent = [track(user, now - timedelta(seconds=60 - i)) for i in range(60)]
    async with (
        serve_app(create_app(settings)) as one,
        serve_app(create_app(settings)) as two,
        http_client(headers=auth("ingest")) as client,
    ):
        r = await client.post(f"{one}/v1/batch", json={"batch": sent})
        assert r.status_code == 200, r.text
        group = {"userId": user, "groupId": account}
        answers = await asyncio.gather(
            client.post(f"{one}/v1/group", json=group), client.post(f"{two}/v1/group", json=group)
        )
        assert [a.status_code for a in answers] == [200, 200]
        released = await account_events(
            broker,
            account,
            count=60,
            timeout=20,
            settle=1.0,
        )
        assert await pending_of(one, f"u:{user}") is None
    ids = [e.payload(UsageEvent).message_id for e in released]
    assert set(ids) == {c["messageId"] for c in sent}
    if url.startswith("postgresql"):
        assert len(ids) == 60


async def test_expiry_leaves_a_user_linked_meanwhile_to_the_release(
    broker: EmbeddedBroker, database_url: DatabaseUrl, tmp_path: Path
) -> None:
    """Another replica links the user after this one's release pass: the expiry that
    follows must not give the now attributable events up as unattributed."""
    url = await database_url("ingest")
    settings = ingest_settings(broker.bootstrap_servers, url, tmp_path)
    run = uuid.uuid4().hex[:8]
    account, user, stranger = f"late-link-{run}", f"ll-{run}", f"ls-{run}"
    calls = [track(user, datetime.now(UTC)) for _ in range(2)]
    async with (
        serve_app(create_app(settings)) as app_url,
        http_client(base_url=app_url, headers=auth("ingest")) as client,
    ):
        r = await client.post(
            "/v1/batch", json={"batch": [*calls, track(stranger, datetime.now(UTC))]}
        )
        assert r.status_code == 200, r.text
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    session: AsyncSession
    async with sessions() as session, session.begin():
        now = datetime.now(UTC)
        session.add(
            UserAccount(user_key=f"u:{user}", account_id=account, updated_at=now, linked_at=now)
        )
    publisher = Publisher(broker.bootstrap_servers, client_id="tests-expiry")
    await publisher.start()
    try:
        releaser = PendingReleaser(sessions, publisher, max_age=timedelta(0), interval=60)
        assert await releaser.expire() == 1  # only the never-linked stranger
        assert await releaser.release(None) == 2
    finally:
        await publisher.stop()
        await engine.dispose()
    released = await read_topic(
        broker.bootstrap_servers,
        topics.USAGE_EVENTS,
        match=lambda e: e.account_id == account,
        count=2,
        timeout=20,
    )
    assert sorted(e.data["message_id"] for e in released) == sorted(c["messageId"] for c in calls)
    [gone] = await read_topic(
        broker.bootstrap_servers,
        topics.USAGE_UNATTRIBUTED,
        match=lambda e: e.data.get("user_id") in (user, stranger),
        count=1,
        timeout=20,
        settle=0.5,
    )
    assert gone.data["user_id"] == stranger
