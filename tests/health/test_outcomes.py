"""Outcomes (churn, renewal, ...) from group traits and REST: a churned account is not
scored or alerted, its alerts resolve with the resolution ``churned``, it leaves its
segment's medians, comes back when reactivated, and its churn is counted in the summary.
Each test has a broker of its own (no other test's accounts replayed into its database);
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared import topics
from shared.broker import EmbeddedBroker
from shared.envelope import Envelope
from tests.health.conftest import (
    AS_OF,
    Running,
    Send,
    account_upsert,
    client,
    daily_usage,
    day_at,
    get_json,
    new_account,
    read_all,
    sender,
    serve_health,
    settle,
    until,
)

QUIET = [8] * 40 + [0] * 20  # active for 40 days, then silent for the last 20: inactivity


@pytest.fixture
async def api(
    private_broker: EmbeddedBroker,
    database_url: Callable[[str], Awaitable[str]],
    tmp_path: Path,
) -> AsyncIterator[Running]:
    url = await database_url("health")
    async with serve_health(private_broker.bootstrap_servers, url, tmp_path) as running:
        yield running


@pytest.fixture
async def send(private_broker: EmbeddedBroker) -> AsyncIterator[Send]:
    async with sender(private_broker.bootstrap_servers, "health-outcome-tests") as _send:
        yield _send


async def alerts_of(api: Running, account: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await get_json(api, "/v1/alerts", account_id=account))["items"]
    return items


def churn(account: str, days_ago: int, **traits: Any) -> Envelope:
    return account_upsert(account, day_at(days_ago), traits={"status": "churned", **traits})


async def test_churn_from_group_traits_resolves_alerts_and_stops_scoring_and_alerting(
    api: Running, send: Send
) -> None:
    account = new_account()
    await send([account_upsert(account, day_at(60), mrr=500.0, plan="pro", segment="smb")])
    await send(daily_usage(account, QUIET))
    await until(lambda: _where(alerts_of(api, account), lambda a: a["rule_id"] == "inactivity"))
    await settle(api)
    opened = await alerts_of(api, account)
    assert opened and {a["status"] for a in opened} == {"open"}
    scored = (await get_json(api, f"/v1/accounts/{account}"))["health"]

    churned_at = (AS_OF - timedelta(days=2)).isoformat()
    message = churn(account, 1, churned_at=churned_at, churn_reason="budget")
    await send([message])
    resolved = await until(
        lambda: _where(alerts_of(api, account), lambda a: a["status"] == "resolved")
    )
    assert len(resolved) == len(opened)
    assert {(a["resolved_by"], a["details"]["resolution"]) for a in resolved} == {
        ("churned", "churned")
    }

    async def published() -> list[Envelope]:
        envs = await read_all(api.settings.kafka_bootstrap_servers, [topics.HEALTH_ALERTS])
        return [e for e in envs if e.account_id == account and e.type == "alert.resolved"]

    sent = await until(lambda: _enough(published(), len(opened)))
    assert {e.data["details"]["resolution"] for e in sent} == {"churned"}
    assert {e.data["alert_id"] for e in sent} == {a["id"] for a in opened}

    outcomes = await get_json(api, f"/v1/accounts/{account}/outcomes")
    assert outcomes["status"] == "churned" and outcomes["churned_at"] == churned_at
    [row] = outcomes["items"]
    assert (row["type"], row["at"], row["reason"], row["source"]) == (
        "churned",
        churned_at,
        "budget",
        "group",
    )
    assert (row["mrr"], row["plan"], row["segment"]) == (500.0, "pro", "smb")
    account_view = await get_json(api, f"/v1/accounts/{account}")
    assert account_view["status"] == "churned" and account_view["churn_reason"] == "budget"

    # A replayed group message, and the trait resent without a date, change nothing.
    await send([message, churn(account, 0)])
    await settle(api)
    assert len((await get_json(api, f"/v1/accounts/{account}/outcomes"))["items"]) == 1

    # Not scored any more, not alerted even without a cool-down.
    async with client(api) as c:
        rule = (await c.get("/v1/alert-rules/inactivity")).json()
        body = {k: rule[k] for k in ("type", "name", "enabled", "severity", "params")}
        assert (
            await c.put("/v1/alert-rules/inactivity", json={**body, "cooldown_days": 0})
        ).status_code == 200
        result = (await c.post("/v1/recompute")).json()
        assert result["alerts"]["opened"] == 0
        # History: scored on a day before the churn, not on or after it.
        before = (AS_OF - timedelta(days=5)).isoformat()
        assert (await c.post("/v1/recompute", params={"as_of": before})).status_code == 200
        after = (AS_OF - timedelta(days=1)).isoformat()
        assert (await c.post("/v1/recompute", params={"as_of": after})).status_code == 200
    assert (await get_json(api, f"/v1/accounts/{account}"))["health"] == scored
    days = {p["day"] for p in await get_json(api, f"/v1/accounts/{account}/scores")}
    assert before in days and after not in days
    assert {a["status"] for a in await alerts_of(api, account)} == {"resolved"}
    assert len(await alerts_of(api, account)) == len(opened)


async def _enough(items: Awaitable[list[Envelope]], count: int) -> list[Envelope]:
    found = await items
    return found if len(found) >= count else []


async def _where(
    items: Awaitable[list[dict[str, Any]]], ok: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    return [i for i in await items if ok(i)]


async def test_churned_account_leaves_segment_medians_and_comes_back_when_active(
    api: Running, send: Send
) -> None:
    big, small = new_account("big"), new_account("small")
    segment = f"seg-{big}"
    async with client(api) as c:  # score the all-events count: its component shows the median
        config = (await c.get("/v1/config/metrics")).json()
        config["metrics"][0]["weight"] = 1.0
        assert (await c.put("/v1/config/metrics", json=config)).status_code == 200
    await send(
        [
            account_upsert(big, day_at(40), segment=segment),
            account_upsert(small, day_at(40), segment=segment),
            *daily_usage(big, [40] * 35),
            *daily_usage(small, [4] * 35),
        ]
    )
    await settle(api)

    async def median(account: str) -> float:
        health = (await get_json(api, f"/v1/accounts/{account}"))["health"]
        events = next(c for c in health["components"] if c["metric"] == "events")
        return float(events["segment_median"])

    assert await median(small) == pytest.approx(22.0)  # median of 40 and 4
    await send([churn(big, 1)])
    await until(lambda: _churned(api, big))
    async with client(api, "write") as c:
        assert (await c.post("/v1/recompute")).status_code == 200
    assert await median(small) == pytest.approx(4.0)  # only itself left

    # A later "active" status brings it back: scored again, in the medians again.
    big_before = (await get_json(api, f"/v1/accounts/{big}"))["health"]["computed_at"]
    await send([account_upsert(big, day_at(0), traits={"status": "active"})])
    await until(lambda: _active(api, big))
    async with client(api, "write") as c:
        assert (await c.post("/v1/recompute")).status_code == 200
    assert (await get_json(api, f"/v1/accounts/{big}"))["health"]["computed_at"] != big_before
    assert await median(small) == pytest.approx(22.0)
    types = [o["type"] for o in (await get_json(api, f"/v1/accounts/{big}/outcomes"))["items"]]
    assert types == ["reactivated", "churned"]  # newest first


async def _churned(api: Running, account: str) -> bool:
    return bool((await get_json(api, f"/v1/accounts/{account}"))["status"] == "churned")


async def _active(api: Running, account: str) -> bool:
    return bool((await get_json(api, f"/v1/accounts/{account}"))["status"] == "active")


async def test_outcomes_over_rest_are_validated_idempotent_and_announced(
    api: Running, send: Send
) -> None:
    account = new_account()
    await send([account_upsert(account, day_at(10), mrr=120.0)])
    await until(lambda: _exists(api, account))
    path = f"/v1/accounts/{account}/outcomes"
    at = (AS_OF - timedelta(days=3)).isoformat()
    async with client(api, "write") as c:
        bad = {
            "type": {"type": "lost", "at": at},
            "at": {"type": "churned", "at": "2026-13-01"},
            "reason": {"type": "churned", "at": at, "reason": "x" * 501},
            "mrr": {"type": "churned", "at": at, "mrr": 5},  # not a field
        }
        for field, body in bad.items():
            r = await c.post(path, json=body)
            assert r.status_code == 422, r.text
            assert r.json()["detail"][0]["loc"] == ["body", field], r.text
        r = await c.post(path, json={"type": "churned"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "at"]
        far = (AS_OF + timedelta(days=400)).isoformat()
        r = await c.post(path, json={"type": "renewed", "at": far})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "at"]
        assert (
            await c.post("/v1/accounts/nobody/outcomes", json={"type": "churned", "at": at})
        ).status_code == 404
        async with client(api, "read") as reader:
            assert (await reader.post(path, json={"type": "churned", "at": at})).status_code == 403

        first = await c.post(path, json={"type": "churned", "at": at, "reason": "price"})
        assert first.status_code == 201, first.text
        again = await c.post(path, json={"type": "churned", "at": at, "reason": "price"})
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        for kind in ("renewed", "downgraded", "upgraded"):
            assert (await c.post(path, json={"type": kind, "at": at})).status_code == 201
        back = await c.post(path, json={"type": "active", "at": AS_OF.isoformat()})
        assert back.status_code == 201 and back.json()["type"] == "reactivated"
    listed = await get_json(api, path)
    assert listed["status"] == "active"
    assert sorted(o["type"] for o in listed["items"]) == [
        "churned",
        "downgraded",
        "reactivated",
        "renewed",
        "upgraded",
    ]
    assert {o["source"] for o in listed["items"]} == {"api"}
    # The churn and the comeback went out on accounts.v1 for playbooks.
    announced = [
        e.data["traits"]["status"]
        for e in await read_all(api.settings.kafka_bootstrap_servers, [topics.ACCOUNTS])
        if e.account_id == account and e.source == "health" and e.data.get("traits")
    ]
    assert announced == ["churned", "active"]


async def _exists(api: Running, account: str) -> bool:
    async with client(api, "read") as c:
        return (await c.get(f"/v1/accounts/{account}")).status_code == 200


async def test_summary_counts_churn_by_reason_segment_plan_and_mrr_lost(
    api: Running, send: Send
) -> None:
    traits = {
        "a": {"mrr": 100.0, "plan": "pro", "segment": "smb"},
        "b": {"mrr": 50.0, "plan": "pro", "segment": "smb"},
        "c": {"mrr": 1000.0, "plan": "enterprise", "segment": "ent"},
        "old": {"mrr": 70.0, "plan": "pro", "segment": "smb"},
        "back": {"mrr": 30.0, "plan": "basic", "segment": "smb"},
    }
    ids = {k: new_account(k) for k in traits}
    await send([account_upsert(ids[k], day_at(100), **t) for k, t in traits.items()])
    for account in ids.values():
        await until(lambda a=account: _exists(api, a))  # type: ignore[misc]
    since = AS_OF - timedelta(days=30)
    churns = {
        "a": (since + timedelta(days=1), "price"),
        "b": (since + timedelta(days=5), "price"),
        "c": (since, None),
        "old": (since - timedelta(days=1), "price"),
        "back": (since + timedelta(days=2), "price"),
    }
    async with client(api, "write") as c:
        for key, (at, reason) in churns.items():
            body: dict[str, Any] = {"type": "churned", "at": at.isoformat()}
            if reason:
                body["reason"] = reason
            assert (await c.post(f"/v1/accounts/{ids[key]}/outcomes", json=body)).status_code == 201
        back = {"type": "reactivated", "at": (since + timedelta(days=9)).isoformat()}
        assert (await c.post(f"/v1/accounts/{ids['back']}/outcomes", json=back)).status_code == 201
        renewal = {"type": "renewed", "at": since.isoformat()}
        assert (await c.post(f"/v1/accounts/{ids['c']}/outcomes", json=renewal)).status_code == 201
        r = await c.get("/v1/outcomes/summary", params={"since": "2026-02-30"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "since"]
        future = (AS_OF + timedelta(days=1)).isoformat()
        r = await c.get("/v1/outcomes/summary", params={"since": future})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "since"]
    summary = await get_json(api, "/v1/outcomes/summary", since=since.isoformat())
    assert summary["churned"] == 3 and summary["won_back"] == 1
    assert summary["mrr_lost"] == 1150.0
    assert summary["by_reason"] == [
        {"reason": "price", "accounts": 2, "mrr_lost": 150.0, "segment": None, "plan": None},
        {"reason": "unknown", "accounts": 1, "mrr_lost": 1000.0, "segment": None, "plan": None},
    ]
    assert [(g["segment"], g["accounts"], g["mrr_lost"]) for g in summary["by_segment"]] == [
        ("smb", 2, 150.0),
        ("ent", 1, 1000.0),
    ]
    assert [(g["plan"], g["accounts"], g["mrr_lost"]) for g in summary["by_plan"]] == [
        ("pro", 2, 150.0),
        ("enterprise", 1, 1000.0),
    ]
    assert summary["counts"] == {
        "churned": 4,
        "renewed": 1,
        "downgraded": 0,
        "upgraded": 0,
        "reactivated": 1,
    }
