"""Edges of the REST API and the recompute: dates, huge numbers, owner moves, the digest
carry-over, rule metric checks, the recompute lock, filters and scopes (both databases)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import update

from services.health.context import HealthContext
from services.health.models import Alert
from services.health.repository import RECOMPUTE_LOCK
from shared import topics
from shared.broker import EmbeddedBroker
from tests.health.conftest import (
    AS_OF,
    Running,
    account_upsert,
    contact_upsert,
    daily_usage,
    day_at,
    get_json,
    new_account,
    settle,
    until,
    usage,
)
from tests.health.test_api import QUIET, alerts_of, client, send
from tests.support import auth, http_client, read_topic

__all__ = ["send"]  # a fixture, used by name

Send = Callable[[list[Any]], Awaitable[None]]


def _loc(r: httpx.Response) -> list[Any]:
    assert r.status_code == 422, r.text
    return list(r.json()["detail"][0]["loc"])


async def test_recompute_as_of_future_refused_past_fills_history_only(
    api: Running, send: Send
) -> None:
    account = new_account()
    await send(daily_usage(account, QUIET))
    await settle(api)
    [alert] = await until(lambda: alerts_of(api, account, rule_id="inactivity"))
    async with client(api, "write") as c:
        before = (await c.get(f"/v1/accounts/{account}")).json()["health"]
        for day in (AS_OF + timedelta(days=1), "2999-12-31"):
            r = await c.post("/v1/recompute", params={"as_of": str(day)})
            assert _loc(r) == ["query", "as_of"] and "after today" in r.text
        past = AS_OF - timedelta(days=30)  # the account was busy then: no inactivity
        r = await c.post("/v1/recompute", params={"as_of": past.isoformat()})
        assert r.status_code == 200, r.text
        assert r.json()["alerts"] == {} and r.json()["scores_changed"] == 0
        after = (await c.get(f"/v1/accounts/{account}")).json()["health"]
        assert after == before  # current score untouched
        history = (await c.get(f"/v1/accounts/{account}/scores")).json()
        by_day = {h["day"]: h for h in history}
        assert by_day[past.isoformat()]["band"] == "green"
        assert by_day[AS_OF.isoformat()]["band"] == "red"
        still = (await c.get(f"/v1/alerts/{alert['id']}")).json()
        assert still["status"] == "open" and still["updated_at"] == alert["updated_at"]
        # the bounds of IsoDate: near 1900-01-01 the windows reach into 1899 fine
        r = await c.post("/v1/recompute", params={"as_of": "1900-01-01"})
        assert r.status_code == 200, r.text
        assert _loc(await c.post("/v1/recompute", params={"as_of": "1899-12-31"})) == [
            "query",
            "as_of",
        ]


async def test_dates_at_the_bounds_are_answered_not_500(api: Running, send: Send) -> None:
    account = new_account()
    await send(daily_usage(account, QUIET))
    [alert] = await until(lambda: alerts_of(api, account, rule_id="inactivity"))
    async with client(api, "write") as c:
        backtest = "/v1/alert-rules/inactivity/backtest"
        r = await c.post(backtest, params={"days": 365, "as_of": "1900-01-01"})
        assert r.status_code == 200 and r.json()["total"] == 0, r.text
        r = await c.post(backtest, params={"days": 365, "as_of": "2999-12-31"})
        assert _loc(r) == ["query", "as_of"] and "after today" in r.text
        for day in ("1900-01-01", "2999-12-31"):
            r = await c.get(f"/v1/accounts/{account}/metrics", params={"days": 730, "end": day})
            assert r.status_code == 200, r.text
            assert r.json()["metrics"][0]["values"] == [0.0] * 730
        url = f"/v1/alerts/{alert['id']}/snooze"
        assert _loc(await c.post(url, json={"until": "1900-01-01T00:00:00+23:00"})) == [
            "body",
            "until",
        ]
        assert _loc(await c.post(url, json={"until": "1899-12-31T00:00:00Z"})) == ["body", "until"]
        r = await c.post(url, json={"until": "2999-12-31T23:59:59Z"})
        assert r.status_code == 200 and r.json()["snoozed_until"].startswith("2999-12-31"), r.text


async def test_absurd_mrr_is_refused_over_rest_and_ignored_from_the_topic(
    api: Running, send: Send
) -> None:
    account = new_account()
    async with client(api, "write") as c:
        for raw in (b'{"mrr": 1e400}', b'{"mrr": 1e13}', b'{"mrr": NaN}'):
            r = await c.put(
                f"/v1/accounts/{account}", content=raw, headers={"content-type": "application/json"}
            )
            assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "mrr", r.text
        assert (await c.put(f"/v1/accounts/{account}", json={"mrr": 1e12})).status_code == 200
    other = new_account()
    await send([account_upsert(other, day_at(1), mrr=1e13, name="Huge Co")])

    async def named() -> Any:
        async with client(api, "read") as c:
            r = await c.get(f"/v1/accounts/{other}")
        return r.json() if r.status_code == 200 and r.json()["name"] == "Huge Co" else None

    found = await until(named)
    assert found["mrr"] is None  # the absurd value was skipped, the rest applied


async def test_over_long_values_from_the_topic_are_cut_dropped_or_digested(
    api: Running, send: Send
) -> None:
    """What another producer wrote past the columns' widths lands without failing its batch
    (on PostgreSQL it used to retry, split and dead-letter the whole message)."""
    account = new_account()
    long_id = "m" * 400
    await send(
        [
            account_upsert(account, day_at(2), name="N" * 400, plan="P" * 400, owner="o" * 400),
            contact_upsert(
                account,
                day_at(2),
                user_id="u1",
                email="e" * 400 + "@x.test",
                name="C" * 400,
                role="R" * 400,
            ),
            contact_upsert(account, day_at(2), user_id="u" * 400, email="long@x.test"),
            usage(account, day_at(1), message_id=long_id, user="v" * 400),
            usage(account, day_at(1), message_id=long_id, user="v" * 400),  # a replay
            usage(account, day_at(1), message_id="m" * 399 + "n", user="v" * 399 + "w"),
        ]
    )

    async def stored() -> Any:
        async with client(api, "read") as c:
            r = await c.get(f"/v1/accounts/{account}")
        body = r.json() if r.status_code == 200 else None
        return body if body and len(body["contacts"]) == 2 and body["name"] else None

    found = await until(stored, running=api)
    assert (len(found["name"]), len(found["plan"]), found["owner"]) == (300, 300, None)
    first, other = sorted(found["contacts"], key=lambda c: len(c["user_id"]))
    assert first["user_id"] == "u1" and first["email"] is None
    assert (len(first["name"]), len(first["role"])) == (300, 300)
    assert other["user_id"].startswith("sha256:") and other["email"] == "long@x.test"

    async def counted() -> Any:
        got = await get_json(api, f"/v1/accounts/{account}/metrics", days=5)
        series = {m["metric"]: sum(m["values"]) for m in got["metrics"]}
        return series if series["events"] else None

    series = await until(counted, running=api)
    assert series["events"] == 2  # the replay of the over-long message id counted once
    assert series["active_users"] == 2  # two users whose ids only differ past the width


async def test_open_alerts_follow_an_owner_change(
    api: Running, send: Send, module_broker: EmbeddedBroker
) -> None:
    account = new_account()
    ann, bob, cat = (f"{n}-{account}@example.com" for n in ("ann", "bob", "cat"))
    await send([account_upsert(account, day_at(60), owner=ann), *daily_usage(account, QUIET)])
    [alert] = await until(lambda: alerts_of(api, account, rule_id="inactivity"))
    assert alert["owner"] == ann
    async with client(api, "write") as c:
        assert (await c.put(f"/v1/accounts/{account}", json={"owner": bob})).status_code == 200
    moved = await alerts_of(api, account, owner=bob)
    assert alert["id"] in {a["id"] for a in moved}
    assert await alerts_of(api, account, owner=ann) == []
    await send([account_upsert(account, datetime.now(UTC), owner=cat)])  # from the topic too

    async def with_cat() -> Any:
        return [a for a in await alerts_of(api, account, owner=cat) if a["id"] == alert["id"]]

    await until(with_cat)
    updates = await read_topic(
        module_broker.bootstrap_servers,
        topics.HEALTH_ALERTS,
        match=lambda e: e.data["alert_id"] == alert["id"] and e.type == "alert.updated",
        count=2,
    )
    assert [e.data["owner"] for e in updates] == [bob, cat]


async def test_a_deferred_alert_stays_in_the_digest_while_it_waits(
    api: Running, send: Send
) -> None:
    owner = f"{new_account('csm')}@example.com"
    account = new_account()
    async with client(api) as c:
        assert (await c.put("/v1/config/alerts", json={"daily_budget_per_csm": 0})).is_success
    await send([account_upsert(account, day_at(60), owner=owner), *daily_usage(account, QUIET)])
    deferred = await until(lambda: alerts_of(api, account, status="deferred"))
    ctx: HealthContext = api.app.state.health
    today = datetime.now(UTC).date()
    async with ctx.sessions() as session, session.begin():  # as if deferred yesterday
        await session.execute(
            update(Alert)
            .where(Alert.account_id == account)
            .values(deferred_day=today - timedelta(days=1))
        )
    async with client(api) as c:
        assert (await c.post("/v1/recompute")).status_code == 200  # still no budget
        digest = (await c.get("/v1/alerts/digest")).json()
        assert {a["id"] for a in digest["owners"][owner]} == {a["id"] for a in deferred}
        before = await c.get("/v1/alerts/digest", params={"day": str(today - timedelta(2))})
        assert owner not in before.json()["owners"]


async def test_rule_params_must_name_configured_metrics(api: Running) -> None:
    base = {"type": "metric_decline", "name": "Decline"}
    async with client(api) as c:
        typo = {**base, "id": "typo", "params": {"metric": "evnts"}}
        r = await c.post("/v1/alert-rules", json=typo)
        assert _loc(r) == ["body", "params", "metric"] and "evnts" in r.text
        r = await c.put(
            "/v1/alert-rules/onboarding-stalled",
            json={"type": "onboarding_stalled", "name": "x", "params": {"metric": "logins"}},
        )
        assert _loc(r) == ["body", "params", "metric"]
        features = {"mode": "features", "features": ["events", "nope"]}
        r = await c.post(
            "/v1/alert-rules",
            json={"id": "feat", "type": "expansion", "name": "F", "params": features},
        )
        assert _loc(r) == ["body", "params", "features", 1]
        r = await c.post(
            "/v1/alert-rules/expansion-growth/backtest", json={"params": {"metric": "nope"}}
        )
        assert _loc(r) == ["body", "params", "metric"]
        ok = {**base, "id": "decline-users", "params": {"metric": "active_users"}}
        assert (await c.post("/v1/alert-rules", json=ok)).status_code == 201


async def test_write_scope_is_needed_for_transitions_and_recompute(api: Running) -> None:
    async with http_client(base_url=api.url, headers=auth("read")) as c:
        for path in ("ack", "resolve"):
            assert (await c.post(f"/v1/alerts/x/{path}")).status_code == 403
        assert (await c.post("/v1/alerts/x/snooze", json={"days": 1})).status_code == 403
        assert (await c.post("/v1/recompute")).status_code == 403
    async with client(api, "write") as c:  # and with it, the route answers
        assert (await c.post("/v1/alerts/x/ack")).status_code == 404


async def test_a_recompute_waits_for_the_advisory_lock_on_postgres(api: Running) -> None:
    url = api.settings.database_url("health")
    if not url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: SQLite has a single writer already")
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", RECOMPUTE_LOCK)  # another replica
        async with client(api, "write") as c:
            task = asyncio.create_task(c.post("/v1/recompute"))
            await asyncio.sleep(1.5)
            assert not task.done()
            await conn.execute("SELECT pg_advisory_unlock($1)", RECOMPUTE_LOCK)
            r = await asyncio.wait_for(task, 30)
            assert r.status_code == 200, r.text
    finally:
        await conn.close()


async def test_unchanged_scores_publish_nothing(
    api: Running, send: Send, module_broker: EmbeddedBroker
) -> None:
    account = new_account()
    # A peer, or an event name, arriving after the account was scored would move its score
    # (segment medians, breadth of use), which the next full rescoring rightly publishes:
    # the account has a segment of its own (and ``api`` reads no earlier test's messages).
    segment = f"seg-{account}"
    await send(
        [account_upsert(account, day_at(60), segment=segment), *daily_usage(account, [8] * 60)]
    )
    await settle(api)

    async def scored() -> list[Any]:
        return await read_topic(
            module_broker.bootstrap_servers,
            topics.HEALTH_SCORES,
            match=lambda e: e.account_id == account,
            count=1,
            settle=1.0,
        )

    first = await scored()
    assert len(first) == 1
    async with client(api, "write") as c:
        r = await c.post("/v1/recompute")
    assert r.status_code == 200 and r.json()["scores_changed"] == 0
    assert len(await scored()) == 1


async def test_filters_by_stage_and_severity_and_sort_by_change(api: Running, send: Send) -> None:
    steady, drop = new_account("steady"), new_account("drop")
    stage = f"stage-{steady}"
    falling = [8] * 53 + [1] * 7  # fell over the last week
    await send(
        [
            account_upsert(steady, day_at(60), stage=stage, segment=stage),
            account_upsert(drop, day_at(60), stage=stage, segment=stage),
            *daily_usage(steady, [8] * 60),
            *daily_usage(drop, falling),
        ]
    )
    await settle(api)
    async with client(api, "read") as c:
        r = await c.get("/v1/accounts", params={"stage": stage, "sort": "change"})
        items = r.json()["items"]
        assert [i["account_id"] for i in items] == [drop, steady]
        assert items[0]["health"]["change"] < 0 <= items[1]["health"]["change"]
        r = await c.get("/v1/accounts", params={"stage": stage, "sort": "-change"})
        assert [i["account_id"] for i in r.json()["items"]] == [steady, drop]
        r = await c.get("/v1/accounts", params={"stage": f"{stage}-other"})
        assert r.json()["items"] == []
    everything = await alerts_of(api, drop)
    severities = {a["severity"] for a in everything}
    assert len(severities) >= 2, everything  # e.g. band drop (4) and metric decline (3)
    top = max(severities)
    high = await alerts_of(api, drop, severity=top)
    assert high and {a["severity"] for a in high} == {top}
    assert len(high) < len(everything)


async def test_onboarding_stalled_counts_from_the_stage_change(api: Running, send: Send) -> None:
    account = new_account()
    await send(
        [account_upsert(account, day_at(60), stage="onboarding"), *daily_usage(account, QUIET)]
    )
    [stalled] = await until(lambda: alerts_of(api, account, rule_id="onboarding-stalled"))
    assert stalled["details"]["days_in_stage"] >= 14  # the first stage: held since first seen
    async with client(api) as c:  # no cool-down: only the stage's age can keep it shut
        rule = (await c.get("/v1/alert-rules/onboarding-stalled")).json()
        keep = ("type", "name", "enabled", "severity", "params")
        body = {**{k: rule[k] for k in keep}, "cooldown_days": 0}
        assert (await c.put("/v1/alert-rules/onboarding-stalled", json=body)).status_code == 200
    async with client(api, "write") as c:
        r = await c.put(f"/v1/accounts/{account}", json={"stage": "adoption"})
        assert r.json()["stage_changed_at"] is not None
        r = await c.put(f"/v1/accounts/{account}", json={"stage": "onboarding"})  # back again
        assert r.status_code == 200
        assert (await c.post("/v1/recompute")).status_code == 200
    [after] = await alerts_of(api, account, rule_id="onboarding-stalled")  # none re-opened
    assert after["id"] == stalled["id"] and after["status"] == "resolved"
    assert after["resolved_by"] == "auto"  # 0 days in the stage: not stalled (yet)
