"""The tracking API against a real broker and real databases."""

from __future__ import annotations

import base64
import gzip
import uuid

import orjson

from shared import topics
from shared.broker import EmbeddedBroker
from shared.messages import AccountUpserted, ContactUpserted, UsageEvent
from tests.support import auth, http_client, read_topic, token


def new_account() -> str:
    return f"acct-{uuid.uuid4().hex[:12]}"


async def test_track_lands_on_usage_topic_with_full_envelope(
    ingest: str, broker: EmbeddedBroker
) -> None:
    account = new_account()
    async with http_client(base_url=ingest, headers=auth("ingest")) as client:
        r = await client.post(
            "/v1/track",
            json={
                "userId": "u1",
                "event": "Report Created",
                "messageId": "m-1",
                "properties": {"rows": 3},
                "context": {"groupId": account},
                "timestamp": "2026-11-01T10:00:00Z",
            },
        )
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True}
    [env] = await read_topic(
        broker.bootstrap_servers,
        topics.USAGE_EVENTS,
        match=lambda e: e.account_id == account,
        count=1,
        settle=0.5,
    )
    assert env.type == "usage.track" and env.source == "ingest" and env.version == 1
    assert env.occurred_at.isoformat().startswith("2026-11-01T10:00:00")
    event = env.payload(UsageEvent)
    assert (event.event, event.user_id, event.message_id) == ("Report Created", "u1", "m-1")
    assert event.properties == {"rows": 3}
    assert len(env.trace_id) == 32 and env.id


async def test_identify_and_group_make_accounts_messages(
    ingest: str, broker: EmbeddedBroker
) -> None:
    account = new_account()
    async with http_client(base_url=ingest, headers=auth("ingest")) as client:
        r1 = await client.post(
            "/v1/group",
            json={
                "userId": "ann",
                "groupId": account,
                "traits": {
                    "name": "Acme",
                    "plan": "pro",
                    "mrr": "1200.5",
                    "owner": "Csm@Example.com",
                    "stage": "onboarding",
                    "renewal_date": "2027-03-01",
                    "segment": "smb",
                    "industry": "retail",
                },
            },
        )
        # no groupId: the account comes from the group call above
        r2 = await client.post(
            "/v1/identify",
            json={
                "userId": "ann",
                "traits": {"email": "ann@acme.test", "name": "Ann", "role": "admin"},
            },
        )
        r3 = await client.post("/v1/track", json={"userId": "ann", "event": "Login"})
    assert [r.status_code for r in (r1, r2, r3)] == [200, 200, 200], (r1.text, r2.text, r3.text)
    envs = await read_topic(
        broker.bootstrap_servers, topics.ACCOUNTS, match=lambda e: e.account_id == account, count=2
    )
    by_type = {e.type: e for e in envs}
    acct = by_type["account.upserted"].payload(AccountUpserted)
    assert (acct.name, acct.plan, acct.mrr, acct.owner) == (
        "Acme",
        "pro",
        1200.5,
        "csm@example.com",
    )
    assert acct.renewal_date is not None and acct.renewal_date.isoformat() == "2027-03-01"
    assert acct.traits == {"industry": "retail"}
    contact = by_type["contact.upserted"].payload(ContactUpserted)
    assert (contact.user_id, contact.email, contact.role) == ("ann", "ann@acme.test", "admin")
    [usage] = await read_topic(
        broker.bootstrap_servers,
        topics.USAGE_EVENTS,
        match=lambda e: e.account_id == account,
        count=1,
    )
    assert usage.payload(UsageEvent).event == "Login"


async def test_event_without_account_is_kept_and_listed_as_pending(ingest: str) -> None:
    user = f"nobody-{uuid.uuid4()}"
    async with http_client(base_url=ingest, headers=auth("ingest")) as client:
        r = await client.post("/v1/track", json={"userId": user, "event": "X"})
        refused = await client.get("/v1/pending")
    assert r.status_code == 200, r.text
    assert refused.status_code == 403  # the list needs the admin scope
    async with http_client(base_url=ingest, headers=auth("admin")) as client:
        listed = await client.get("/v1/pending", params={"limit": 1000})
    assert listed.status_code == 200, listed.text
    [mine] = [u for u in listed.json()["items"] if u["user_key"] == f"u:{user}"]
    assert mine["events"] == 1 and 0 <= mine["oldest_age_seconds"] < 60


async def test_partial_batch_publishes_the_valid_events(
    ingest: str, broker: EmbeddedBroker
) -> None:
    account = new_account()
    batch = [
        {"type": "track", "userId": "u", "event": "A", "groupId": account, "messageId": "a"},
        {"type": "track", "userId": "u", "groupId": account},  # no event name
        {"type": "bogus", "userId": "u", "groupId": account},
        {"type": "page", "userId": "u", "name": "Home", "groupId": account, "messageId": "p"},
        {
            "type": "track",
            "userId": "u",
            "event": "B",
            "groupId": account,
            "timestamp": "not a time",
        },
        "not an object",
    ]
    async with http_client(base_url=ingest, headers=auth("ingest")) as client:
        r = await client.post("/v1/batch", json={"batch": batch})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["accepted"] == 2
    rejected = {item["index"]: item["reason"] for item in body["rejected"]}
    assert set(rejected) == {1, 2, 4, 5}
    assert "event is required" in rejected[1]
    assert rejected[2].startswith("type")
    assert rejected[4].startswith("timestamp")
    envs = await read_topic(
        broker.bootstrap_servers,
        topics.USAGE_EVENTS,
        match=lambda e: e.account_id == account,
        count=2,
        settle=0.5,
    )
    assert sorted(e.payload(UsageEvent).event for e in envs) == ["A", "page:Home"]


async def test_all_invalid_batch_is_400(ingest: str) -> None:
    async with http_client(base_url=ingest, headers=auth("ingest")) as client:
        r = await client.post(
            "/v1/batch", json={"batch": [{"type": "track"}, {"type": "track", "userId": "u"}]}
        )
    assert r.status_code == 400
    rejected = r.json()["rejected"]
    assert [item["index"] for item in rejected] == [0, 1]
    assert "userId or anonymousId is required" in rejected[0]["reason"]
    assert "event is required" in rejected[1]["reason"]
    assert "[0]" in r.json()["detail"] and "[1]" in r.json()["detail"]


async def test_gzip_body_and_decompressed_limits(ingest: str, broker: EmbeddedBroker) -> None:
    account = new_account()
    body = orjson.dumps(
        {"batch": [{"type": "track", "userId": "u", "event": "Zipped", "groupId": account}]}
    )
    bomb = gzip.compress(orjson.dumps({"batch": [], "pad": "x" * 2_000_000}))
    assert len(bomb) < 10_000
    async with http_client(base_url=ingest, headers=auth("ingest")) as client:
        ok = await client.post(
            "/v1/batch",
            content=gzip.compress(body),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
        refused = await client.post("/v1/batch", content=bomb, headers={"Content-Encoding": "gzip"})
        broken = await client.post(
            "/v1/batch", content=b"\x1f\x8bnot gzip", headers={"Content-Encoding": "gzip"}
        )
        brotli = await client.post("/v1/batch", content=b"{}", headers={"Content-Encoding": "br"})
    assert ok.status_code == 200, ok.text
    assert refused.status_code == 413 and "decompressed" in refused.json()["detail"]
    assert broken.status_code == 400 and "gzip" in broken.json()["detail"]
    assert brotli.status_code == 415
    [env] = await read_topic(
        broker.bootstrap_servers,
        topics.USAGE_EVENTS,
        match=lambda e: e.account_id == account,
        count=1,
    )
    assert env.payload(UsageEvent).event == "Zipped"


async def test_size_limits(ingest: str) -> None:
    account = new_account()
    big_event = {
        "userId": "u",
        "event": "Big",
        "groupId": account,
        "properties": {f"k{i}": "v" * 1000 for i in range(40)},
    }
    async with http_client(base_url=ingest, headers=auth("ingest")) as client:
        single = await client.post("/v1/track", json=big_event)
        batch = await client.post(
            "/v1/batch",
            json={
                "batch": [
                    {**big_event, "type": "track"},
                    {"type": "track", "userId": "u", "event": "Small", "groupId": account},
                ]
            },
        )
        huge = await client.post(
            "/v1/batch",
            json={
                "batch": [
                    {
                        "type": "track",
                        "userId": "u",
                        "event": "E",
                        "groupId": account,
                        "properties": {"p": "v" * 20_000},
                    }
                    for _ in range(30)
                ]
            },
        )
    assert single.status_code == 413
    assert batch.status_code == 200 and batch.json()["accepted"] == 1
    assert "larger than" in batch.json()["rejected"][0]["reason"]
    assert huge.status_code == 413


async def test_malformed_requests_get_named_4xx(ingest: str) -> None:
    account = new_account()
    cases = [
        (b"{not json", 400, "malformed JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b"", 400, "empty"),
        (orjson.dumps({"event": "X", "groupId": account}), 400, "userId or anonymousId"),
        (orjson.dumps({"userId": ["a"], "event": "X", "groupId": account}), 400, "userId"),
        (
            orjson.dumps(
                {
                    "userId": "u",
                    "event": "X",
                    "groupId": account,
                    "properties": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {}}}}}}}}},
                }
            ),
            400,
            "nested deeper",
        ),
        (
            orjson.dumps(
                {
                    "userId": "u",
                    "event": "X",
                    "groupId": account,
                    "timestamp": "1990-01-01T00:00:00Z",
                }
            ),
            400,
            "out of range",
        ),
        (orjson.dumps({"userId": "u", "event": "X" * 300, "groupId": account}), 400, "event"),
    ]
    async with http_client(base_url=ingest, headers=auth("ingest")) as client:
        for content, status, needle in cases:
            r = await client.post(
                "/v1/track", content=content, headers={"Content-Type": "application/json"}
            )
            assert r.status_code == status, (content[:60], r.status_code, r.text)
            assert needle in r.json()["detail"], (needle, r.text)


async def test_group_traits_are_validated(ingest: str) -> None:
    async with http_client(base_url=ingest, headers=auth("ingest")) as client:
        mrr = await client.post(
            "/v1/group", json={"userId": "u", "groupId": new_account(), "traits": {"mrr": "lots"}}
        )
        owner = await client.post(
            "/v1/group", json={"userId": "u", "groupId": new_account(), "traits": {"owner": "bob"}}
        )
    assert mrr.status_code == 400 and "traits.mrr" in mrr.json()["detail"]
    assert owner.status_code == 400 and "traits.owner" in owner.json()["detail"]


async def test_auth_bearer_basic_writekey_and_scopes(ingest: str) -> None:
    account = new_account()
    event = {"userId": "u", "event": "Auth", "groupId": account}
    basic = base64.b64encode(f"{token('ingest')}:".encode()).decode()
    async with http_client(base_url=ingest) as client:
        none = await client.post("/v1/track", json=event)
        bad = await client.post("/v1/track", json=event, headers={"Authorization": "Bearer nope"})
        wrong_scope = await client.post("/v1/track", json=event, headers=auth("read"))
        via_basic = await client.post(
            "/v1/track", json=event, headers={"Authorization": f"Basic {basic}"}
        )
        via_body = await client.post("/v1/track", json={**event, "writeKey": token("ingest")})
        via_admin = await client.post("/v1/track", json=event, headers=auth("admin"))
    assert none.status_code == 401 and bad.status_code == 401
    assert wrong_scope.status_code == 403
    assert [via_basic.status_code, via_body.status_code, via_admin.status_code] == [200, 200, 200]


async def test_ops_endpoints(ingest: str) -> None:
    async with http_client(base_url=ingest) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
        await client.post("/v1/track", json={})
        metrics = (await client.get("/metrics")).text
        assert 'uptake_http_requests_total{method="POST",route="/v1/track",status="401"}' in metrics
