"""Every call a real Segment or RudderStack integration sends is kept, in any order.

Ingest and the real health service run side by side on the same broker and on each
database; the counts are read back from health's rollups and its account API, as a CS
tool would see them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import rudderstack.analytics as rudder
import segment.analytics as segment

from services.health.app import create_app as create_health
from services.ingest.app import create_app as create_ingest
from shared import topics
from shared.broker import EmbeddedBroker
from shared.messages import UsageEvent
from tests.e2e.flows import events_counted, eventually, get_json
from tests.health.conftest import health_settings, wait_caught_up
from tests.ingest.conftest import ingest_settings
from tests.support import auth, http_client, read_topic, serve_app, token


@dataclass
class Pair:
    ingest: str
    health: str
    group: str  # health's consumer group
    bootstrap: str


@pytest.fixture
async def pair(
    broker: EmbeddedBroker, database_url: Callable[[str], Awaitable[str]], tmp_path: Path
) -> AsyncIterator[Pair]:
    """Ingest and health, each on its own database of the backend under test."""
    bootstrap = broker.bootstrap_servers
    health = health_settings(bootstrap, await database_url("health"), tmp_path)
    ingest = ingest_settings(
        bootstrap, await database_url("ingest"), tmp_path, INGEST_PENDING_SWEEP_INTERVAL=1
    )
    async with (
        serve_app(create_health(health)) as health_url,
        serve_app(create_ingest(ingest)) as ingest_url,
    ):
        yield Pair(ingest_url, health_url, health.consumer_group, bootstrap)


def sdk(kind: str, host: str, errors: list[Exception]) -> Any:
    """The vendor's own client, pointed at ingest (RudderStack's posts gzip by default)."""
    common: dict[str, Any] = {
        "write_key": token("ingest"),
        "host": host,
        "max_retries": 1,
        "on_error": lambda e, batch: errors.append(e),
        "upload_interval": 0.05,
    }
    if kind == "segment":
        return segment.Client(gzip=True, **common)
    return rudder.Client(**common)


async def flush(client: Any) -> None:
    await asyncio.to_thread(client.flush)


async def contact_emails(health: str, account: str) -> set[str]:
    try:
        body = await get_json(f"{health}/v1/accounts/{account}")
    except httpx.HTTPStatusError:
        return set()
    return {c["email"] for c in body.get("contacts") or [] if c["email"]}


async def until_counted(health: str, account: str, expected: int) -> None:
    async def counted() -> bool:
        return await events_counted(health, account, days=30) >= expected

    await eventually(counted, timeout=90, what=f"{expected} events on {account}")
    assert await events_counted(health, account, days=30) == expected


async def until_contact(health: str, account: str, email: str) -> None:
    async def has() -> bool:
        return email in await contact_emails(health, account)

    await eventually(has, timeout=90, what=f"contact {email} on {account}")


@pytest.mark.parametrize("kind", ["segment", "rudderstack"])
async def test_sdk_calls_in_every_order_are_counted(pair: Pair, kind: str) -> None:
    run = uuid.uuid4().hex[:8]
    errors: list[Exception] = []
    client = sdk(kind, pair.ingest, errors)
    traits = {"plan": "team", "owner": "csm@uptake.test"}

    # 1. identify on sign-up, then group, then track without a groupId
    a1, u1 = f"{kind}-a1-{run}", f"u1-{run}"
    client.identify(u1, {"email": f"{u1}@co.test", "name": "One", "role": "admin"})
    await flush(client)
    client.group(u1, a1, {"name": "First Co", **traits})
    await flush(client)
    for i in range(4):
        client.track(u1, "Report Created", {"i": i})
    await flush(client)

    # 2. track before anything else, then identify, then group
    a2, u2 = f"{kind}-a2-{run}", f"u2-{run}"
    for i in range(3):
        client.track(u2, "Report Created", {"i": i})
    client.page(u2, name="Dashboard")
    await flush(client)
    client.identify(u2, {"email": f"{u2}@co.test"})
    await flush(client)
    client.group(u2, a2, {"name": "Second Co", **traits})
    await flush(client)

    # 3. anonymous pages, then an identify that ties the anonymousId, then group
    a3, u3, anon = f"{kind}-a3-{run}", f"u3-{run}", f"anon-{run}"
    for path in ("/", "/pricing"):
        client.page(None, name="Landing", properties={"path": path}, anonymous_id=anon)
    await flush(client)
    client.identify(u3, {"email": f"{u3}@co.test"}, anonymous_id=anon)
    await flush(client)
    client.group(u3, a3, {"name": "Third Co", **traits})
    client.track(u3, "Signed Up")
    await flush(client)
    await asyncio.to_thread(client.join)
    assert errors == []

    for account, user, count in ((a1, u1, 4), (a2, u2, 4), (a3, u3, 3)):
        await until_counted(pair.health, account, count)
        await until_contact(pair.health, account, f"{user}@co.test")
    async with http_client(base_url=pair.ingest, headers=auth("admin")) as admin:
        listed = (await admin.get("/v1/pending", params={"limit": 1000})).json()
    mine = {f"u:{u1}", f"u:{u2}", f"a:{anon}"}
    assert not [u for u in listed["items"] if u["user_key"] in mine]  # nothing left parked


def _call(kind: str, user: str, at: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "userId": user,
        "messageId": uuid.uuid4().hex,
        "timestamp": at.isoformat(),
        **fields,
    }


async def test_replayed_batches_change_nothing_in_health(pair: Pair) -> None:
    run = uuid.uuid4().hex[:8]
    account, user = f"replay-{run}", f"ru-{run}"
    now = datetime.now(UTC)
    early = {
        "batch": [
            _call("track", user, now - timedelta(minutes=9 - i), event="Report Created")
            for i in range(5)
        ]
    }
    later = {
        "batch": [
            _call("identify", user, now, traits={"email": f"{user}@co.test"}),
            _call("group", user, now, groupId=account, traits={"name": "Replay Co"}),
            _call("track", user, now, event="Report Created"),
        ]
    }
    async with http_client(base_url=pair.ingest, headers=auth("ingest")) as client:
        for body in (early, later):
            r = await client.post("/v1/batch", json=body)
            assert r.status_code == 200, r.text
        await until_counted(pair.health, account, 6)
        for body in (early, later, early):  # the SDK retried, or someone replayed a log
            r = await client.post("/v1/batch", json=body)
            assert r.status_code == 200, r.text
    # the replays were published before their 200s: once health has read to the end of
    # its topics, it has seen them all
    await wait_caught_up(pair.bootstrap, pair.group)
    assert await events_counted(pair.health, account, days=30) == 6
    assert await contact_emails(pair.health, account) == {f"{user}@co.test"}


async def test_a_user_in_two_accounts_is_a_contact_of_both_and_moves(
    pair: Pair, broker: EmbeddedBroker
) -> None:
    run = uuid.uuid4().hex[:8]
    first, second, user = f"ws1-{run}", f"ws2-{run}", f"two-{run}"
    now = datetime.now(UTC)
    async with http_client(base_url=pair.ingest, headers=auth("ingest")) as client:
        # traits out of order: the later identify arrives first; each trait keeps its latest
        newer = _call("identify", user, now, traits={"email": f"{user}@new.test"})
        older = _call(
            "identify",
            user,
            now - timedelta(hours=1),
            traits={"email": f"{user}@old.test", "role": "admin"},
        )
        for call in (newer, older):
            assert (await client.post("/v1/identify", json=call)).status_code == 200
        r = await client.post(
            "/v1/batch",
            json={
                "batch": [
                    _call("group", user, now - timedelta(minutes=5), groupId=first),
                    _call("track", user, now - timedelta(minutes=4), event="Before Move"),
                ]
            },
        )
        assert r.status_code == 200, r.text
        assert (
            await client.post("/v1/group", json=_call("group", user, now, groupId=second))
        ).is_success
        # a late group call to the first account (older than the move) moves nobody back
        stale = _call("group", user, now - timedelta(minutes=3), groupId=first)
        assert (await client.post("/v1/group", json=stale)).status_code == 200
        after = _call("track", user, now, event="After Move")
        assert (await client.post("/v1/track", json=after)).status_code == 200

    for account in (first, second):
        await until_contact(pair.health, account, f"{user}@new.test")
        body = await get_json(f"{pair.health}/v1/accounts/{account}")
        [contact] = [c for c in body["contacts"] if c["user_id"] == user]
        assert contact["role"] == "admin"  # the older identify's trait nobody overwrote
    await until_counted(pair.health, first, 1)
    await until_counted(pair.health, second, 1)
    moved = await read_topic(
        broker.bootstrap_servers,
        topics.USAGE_EVENTS,
        match=lambda e: e.data.get("user_id") == user,
        count=2,
    )
    where = {e.payload(UsageEvent).event: e.account_id for e in moved}
    assert where == {"Before Move": first, "After Move": second}
