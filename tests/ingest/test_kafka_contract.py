"""What consumers rely on: the record key is the account, the trace id travels, and the
user -> account links live in the database, not only in one process's cache."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from services.ingest.app import create_app
from shared import topics
from shared.broker import EmbeddedBroker
from shared.messages import UsageEvent
from tests.ingest.conftest import ingest_settings
from tests.support import auth, http_client, read_records, serve_app


def new_account() -> str:
    return f"acct-{uuid.uuid4().hex[:12]}"


async def test_record_key_is_the_account_on_both_topics(
    ingest: str, broker: EmbeddedBroker
) -> None:
    account = new_account()
    async with http_client(base_url=ingest, headers=auth("ingest")) as client:
        r = await client.post(
            "/v1/batch",
            json={
                "batch": [
                    {"type": "group", "userId": "k", "groupId": account},
                    {"type": "identify", "userId": "k", "traits": {"email": "k@x.test"}},
                    {"type": "track", "userId": "k", "event": "Keyed"},
                    {"type": "page", "userId": "k", "name": "Home"},
                ]
            },
        )
    assert r.status_code == 200 and r.json() == {"success": True}, r.text
    usage = await read_records(
        broker.bootstrap_servers,
        topics.USAGE_EVENTS,
        match=lambda e: e.account_id == account,
        count=2,
        settle=0.3,
    )
    accounts = await read_records(
        broker.bootstrap_servers,
        topics.ACCOUNTS,
        match=lambda e: e.account_id == account,
        count=2,
        settle=0.3,
    )
    assert sorted(rec.envelope.type for rec in accounts) == ["account.upserted", "contact.upserted"]
    assert len(usage) == 2
    assert {rec.key for rec in (*usage, *accounts)} == {account.encode()}


async def test_trace_id_from_traceparent_in_envelope_and_header(
    ingest: str, broker: EmbeddedBroker
) -> None:
    account = new_account()
    trace = uuid.uuid4().hex
    traceparent = f"00-{trace}-00f067aa0ba902b7-01"
    async with http_client(base_url=ingest, headers=auth("ingest")) as client:
        traced = await client.post(
            "/v1/track",
            json={"userId": "t", "event": "Traced", "groupId": account},
            headers={"traceparent": traceparent},
        )
        fresh = await client.post(
            "/v1/group", json={"userId": "t", "groupId": account, "traits": {"plan": "pro"}}
        )
    assert traced.status_code == 200 and fresh.status_code == 200, (traced.text, fresh.text)
    [usage] = await read_records(
        broker.bootstrap_servers,
        topics.USAGE_EVENTS,
        match=lambda e: e.account_id == account,
        count=1,
    )
    assert usage.envelope.trace_id == trace
    assert usage.headers["trace_id"] == trace.encode()
    [upsert] = await read_records(
        broker.bootstrap_servers, topics.ACCOUNTS, match=lambda e: e.account_id == account, count=1
    )
    # without a traceparent: a new id, the same in the envelope and the header
    assert upsert.envelope.trace_id != trace and len(upsert.envelope.trace_id) == 32
    assert upsert.headers["trace_id"] == upsert.envelope.trace_id.encode()


async def test_account_links_are_read_back_from_the_database(
    broker: EmbeddedBroker, database_url: Callable[[str], Awaitable[str]], tmp_path: Path
) -> None:
    account, user = new_account(), f"db-{uuid.uuid4().hex[:8]}"
    settings = ingest_settings(broker.bootstrap_servers, await database_url("ingest"), tmp_path)
    async with (
        serve_app(create_app(settings)) as first,
        http_client(base_url=first, headers=auth("ingest")) as client,
    ):
        r = await client.post("/v1/group", json={"userId": user, "groupId": account})
        assert r.status_code == 200, r.text
    # a new process's app: its cache is empty, only the database knows the link
    async with (
        serve_app(create_app(settings)) as second,
        http_client(base_url=second, headers=auth("ingest")) as client,
    ):
        r = await client.post("/v1/track", json={"userId": user, "event": "Remembered"})
        unknown = await client.post("/v1/track", json={"userId": f"{user}-x", "event": "E"})
    assert r.status_code == 200, r.text
    assert unknown.status_code == 200, unknown.text  # kept: parked until a group call
    [rec] = await read_records(
        broker.bootstrap_servers,
        topics.USAGE_EVENTS,
        match=lambda e: e.account_id == account,
        count=1,
    )
    assert rec.envelope.payload(UsageEvent).event == "Remembered"
    assert rec.key == account.encode()
