"""Segment's own Python SDK, pointed at ingest, delivers its events."""

from __future__ import annotations

import asyncio
import uuid

from segment.analytics import Client

from shared import topics
from shared.broker import EmbeddedBroker
from shared.messages import AccountUpserted, ContactUpserted, UsageEvent
from tests.support import read_topic, token


async def test_segment_python_sdk_delivers(ingest: str, broker: EmbeddedBroker) -> None:
    account = f"sdk-{uuid.uuid4().hex[:10]}"
    errors: list[Exception] = []
    client = Client(
        write_key=token("ingest"),
        host=ingest,
        gzip=True,
        max_retries=1,
        on_error=lambda e, batch: errors.append(e),
        upload_interval=0.05,
    )
    client.group("u-1", account, {"name": "SDK Co", "plan": "team", "owner": "csm@uptake.test"})
    client.identify("u-1", {"email": "u1@sdk.test", "name": "U One"})
    for i in range(25):
        client.track("u-1", "Report Created", {"i": i})  # account from the group call
    client.page("u-1", name="Dashboard", properties={"path": "/"})
    await asyncio.to_thread(client.flush)
    await asyncio.to_thread(client.join)
    assert errors == []

    usage = await read_topic(
        broker.bootstrap_servers,
        topics.USAGE_EVENTS,
        match=lambda e: e.account_id == account,
        count=26,
        settle=0.5,
    )
    events = [e.payload(UsageEvent) for e in usage]
    assert sum(e.event == "Report Created" for e in events) == 25
    assert any(e.event == "page:Dashboard" for e in events)
    assert len({e.message_id for e in events}) == 26  # the SDK's messageIds carried through
    accounts = await read_topic(
        broker.bootstrap_servers, topics.ACCOUNTS, match=lambda e: e.account_id == account, count=2
    )
    kinds = {e.type: e for e in accounts}
    assert kinds["account.upserted"].payload(AccountUpserted).owner == "csm@uptake.test"
    assert kinds["contact.upserted"].payload(ContactUpserted).email == "u1@sdk.test"
