"""Inputs that used to slip through: batch sentAt, NUL in traits, renewal dates, bad groups."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from shared import topics
from shared.broker import EmbeddedBroker
from shared.messages import AccountUpserted, UsageEvent
from tests.support import auth, http_client, read_topic


def new_account() -> str:
    return f"acct-{uuid.uuid4().hex[:12]}"


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


async def test_batch_sent_at_is_validated_like_the_events(
    ingest: str, broker: EmbeddedBroker
) -> None:
    account = new_account()
    skewed = {
        "type": "track",
        "userId": "u",
        "event": "Skewed",
        "groupId": account,
        "originalTimestamp": "2023-12-31T23:59:00Z",  # a minute before the client's sentAt
    }
    async with http_client(base_url=ingest, headers=auth("ingest")) as client:
        naive = await client.post(
            "/v1/batch", json={"sentAt": "2024-01-01T00:00:00", "batch": [skewed]}
        )
        far = await client.post(
            "/v1/batch", json={"sentAt": "9999-01-01T00:00:00Z", "batch": [skewed]}
        )
        junk = await client.post("/v1/batch", json={"sentAt": "yesterday", "batch": [skewed]})
        number = await client.post("/v1/batch", json={"sentAt": 0, "batch": [skewed]})
    assert naive.status_code == 200, naive.text  # naive = UTC, not a TypeError
    for bad in (far, junk, number):
        assert bad.status_code == 400, bad.text
        assert bad.json()["detail"].startswith("sentAt"), bad.text
    assert "out of range" in far.json()["detail"]
    [env] = await read_topic(
        broker.bootstrap_servers,
        topics.USAGE_EVENTS,
        match=lambda e: e.account_id == account,
        count=1,
        settle=0.3,
    )
    # the client's clock runs behind: the event happened a minute before it arrived here
    lag = datetime.now(UTC) - env.payload(UsageEvent).timestamp
    assert timedelta(seconds=50) < lag < timedelta(seconds=90), lag


async def test_skew_correction_out_of_range_rejects_that_event(ingest: str) -> None:
    account = new_account()
    now = datetime.now(UTC)
    batch = [
        {"type": "track", "userId": "u", "event": "Ok", "groupId": account},
        {
            "type": "track",
            "userId": "u",
            "event": "Ancient",
            "groupId": account,
            "originalTimestamp": "2000-01-01T00:00:00Z",
            "sentAt": iso(now + timedelta(hours=12)),  # corrected: before 2000
        },
    ]
    async with http_client(base_url=ingest, headers=auth("ingest")) as client:
        r = await client.post("/v1/batch", json={"batch": batch})
        single = await client.post("/v1/track", json={**batch[1], "type": None})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1
    [rejected] = r.json()["rejected"]
    assert rejected["index"] == 1 and rejected["reason"].startswith("originalTimestamp")
    assert single.status_code == 400 and "originalTimestamp" in single.json()["detail"]


async def test_nul_is_refused_in_everything_stored_as_text(ingest: str) -> None:
    account = new_account()
    group = {"userId": "u", "groupId": account}
    cases = [
        ("/v1/group", {**group, "traits": {"name": "Ac\x00me"}}, "traits.name"),
        ("/v1/group", {**group, "traits": {"plan": "p\x00"}}, "traits.plan"),
        ("/v1/group", {**group, "traits": {"owner": "a@b\x00.c"}}, "traits.owner"),
        ("/v1/group", {**group, "traits": {"stage": "\x00"}}, "traits.stage"),
        ("/v1/group", {**group, "traits": {"segment": "s\x00"}}, "traits.segment"),
        ("/v1/group", {**group, "traits": {"industry": {"x": ["re\x00tail"]}}}, "traits.industry"),
        ("/v1/group", {**group, "traits": {"bad\x00key": 1}}, "traits"),
        ("/v1/identify", {**group, "traits": {"email": "a\x00@b.c"}}, "traits.email"),
        ("/v1/identify", {**group, "traits": {"role": "ad\x00min"}}, "traits.role"),
        ("/v1/track", {**group, "event": "Log\x00in"}, "event"),
        ("/v1/page", {**group, "name": "Ho\x00me"}, "name"),
    ]
    async with http_client(base_url=ingest, headers=auth("ingest")) as client:
        for path, body, field in cases:
            r = await client.post(path, json=body)
            assert r.status_code == 400, (path, body, r.text)
            detail = r.json()["detail"]
            assert detail.startswith(field) and "NUL" in detail, (field, detail)
        batch = await client.post(
            "/v1/batch",
            json={
                "batch": [
                    {"type": "group", **group, "traits": {"name": "Acme"}},
                    {"type": "identify", **group, "traits": {"name": "A\x00n"}},
                ]
            },
        )
    assert batch.status_code == 200 and batch.json()["accepted"] == 1, batch.text
    [rejected] = batch.json()["rejected"]
    assert rejected["index"] == 1 and rejected["reason"].startswith("traits.name")


async def test_renewal_date_must_be_a_real_date(ingest: str, broker: EmbeddedBroker) -> None:
    account = new_account()
    async with http_client(base_url=ingest, headers=auth("ingest")) as client:
        refused = [
            await client.post(
                "/v1/group",
                json={"userId": "u", "groupId": account, "traits": {"renewal_date": value}},
            )
            for value in ("2027-03-01junk", "2027-02-30", "03/01/2027", "9999-01-01", 20270301)
        ]
        as_datetime = await client.post(
            "/v1/group",
            json={
                "userId": "u",
                "groupId": account,
                "traits": {"renewal_date": "2027-03-01T00:00:00Z"},
            },
        )
    for r in refused:
        assert r.status_code == 400, r.text
        assert r.json()["detail"].startswith("traits.renewal_date"), r.text
    assert as_datetime.status_code == 200, as_datetime.text
    [env] = await read_topic(
        broker.bootstrap_servers, topics.ACCOUNTS, match=lambda e: e.account_id == account, count=1
    )
    assert str(env.payload(AccountUpserted).renewal_date) == "2027-03-01"


async def test_only_accepted_group_calls_tie_users_to_accounts(
    ingest: str, broker: EmbeddedBroker
) -> None:
    refused_account, good_account = new_account(), new_account()
    bad_user, good_user = f"bad-{uuid.uuid4().hex[:8]}", f"good-{uuid.uuid4().hex[:8]}"
    batch = [
        # owner is not an email: this group call is refused, so it ties nobody to anything
        {"type": "group", "userId": bad_user, "groupId": refused_account, "traits": {"owner": "x"}},
        {"type": "track", "userId": bad_user, "event": "Orphan"},
        {"type": "group", "userId": good_user, "groupId": good_account},
        {"type": "track", "userId": good_user, "event": "Linked"},
    ]
    async with http_client(base_url=ingest, headers=auth("ingest")) as client:
        r = await client.post("/v1/batch", json={"batch": batch})
        later = await client.post("/v1/track", json={"userId": bad_user, "event": "Later"})
    assert r.status_code == 200, r.text
    rejected = {item["index"]: item["reason"] for item in r.json()["rejected"]}
    assert set(rejected) == {0}  # the orphan track is kept (parked), not refused
    assert rejected[0].startswith("traits.owner")
    assert later.status_code == 200, later.text
    async with http_client(base_url=ingest, headers=auth("admin")) as client:
        pending = (await client.get("/v1/pending")).json()
    [parked] = [u for u in pending["items"] if u["user_key"] == f"u:{bad_user}"]
    assert parked["events"] == 2  # "Orphan" and "Later" wait for a group call
    orphans = await read_topic(
        broker.bootstrap_servers,
        topics.USAGE_EVENTS,
        match=lambda e: e.account_id == refused_account,
        count=0,
        settle=1.5,
    )
    assert orphans == []
    [linked] = await read_topic(
        broker.bootstrap_servers,
        topics.USAGE_EVENTS,
        match=lambda e: e.account_id == good_account,
        count=1,
    )
    assert linked.payload(UsageEvent).event == "Linked"


async def test_header_token_is_checked_before_the_body(ingest: str) -> None:
    broken_gzip = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    async with http_client(base_url=ingest) as client:
        bad = await client.post(
            "/v1/batch",
            content=b"\x1f\x8bnot gzip",
            headers={**broken_gzip, "Authorization": "Bearer nope"},
        )
        scope = await client.post(
            "/v1/batch", content=b"\x1f\x8bnot gzip", headers={**broken_gzip, **auth("read")}
        )
        good = await client.post(
            "/v1/batch", content=b"\x1f\x8bnot gzip", headers={**broken_gzip, **auth("ingest")}
        )
    assert bad.status_code == 401, bad.text
    assert scope.status_code == 403, scope.text
    assert good.status_code == 400 and "gzip" in good.json()["detail"]
