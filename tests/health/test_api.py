"""The REST API on a real server, a real broker (this module's own) and both databases."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.health.alerts import alert_id
from services.health.app import create_app
from shared import topics
from shared.broker import EmbeddedBroker
from shared.kafka import Publisher
from tests.health.conftest import (
    Running,
    Send,
    account_upsert,
    client,
    contact_upsert,
    daily_usage,
    day_at,
    health_settings,
    new_account,
    publish,
    sender,
    settle,
    until,
    usage,
)
from tests.support import auth, http_client, read_topic, serve_app

QUIET = [8] * 40 + [0] * 20  # active for 40 days, then silent for the last 20


@pytest.fixture
async def send(module_broker: EmbeddedBroker) -> AsyncIterator[Send]:
    async with sender(module_broker.bootstrap_servers, "health-api-tests") as _send:
        yield _send


async def alerts_of(api: Running, account: str, **filters: Any) -> list[dict[str, Any]]:
    async with client(api, "read") as c:
        r = await c.get("/v1/alerts", params={"account_id": account, **filters})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def test_scopes_read_write_admin(api: Running) -> None:
    async with http_client(base_url=api.url) as c:
        assert (await c.get("/v1/accounts")).status_code == 401
        r = await c.get("/v1/accounts", headers=auth("ingest"))
        assert r.status_code == 403
        assert (await c.get("/v1/accounts", headers=auth("read"))).status_code == 200
        r = await c.put("/v1/accounts/a1", json={"stage": "x"}, headers=auth("read"))
        assert r.status_code == 403
        r = await c.get("/v1/config/metrics", headers=auth("read"))
        assert r.status_code == 200
        r = await c.put("/v1/config/metrics", json=r.json(), headers=auth("write"))
        assert r.status_code == 403
        assert (await c.get("/healthz")).status_code == 200


async def test_put_account_publishes_change_and_owner_change_once(
    api: Running, module_broker: EmbeddedBroker
) -> None:
    account = new_account()
    async with client(api, "write") as c:
        r = await c.put(f"/v1/accounts/{account}", json={"owner": "Ann@Example.com", "mrr": 50})
        assert r.status_code == 200, r.text
        r = await c.put(f"/v1/accounts/{account}", json={"owner": "bob@example.com"})
        assert r.json()["previous_owner"] == "ann@example.com"
        assert r.json()["owner"] == "bob@example.com" and r.json()["owner_changed_at"]
        bad = await c.put(f"/v1/accounts/{account}", json={"owner": "bob", "mrr": -1})
        assert bad.status_code == 422
        assert {e["loc"][-1] for e in bad.json()["detail"]} == {"owner", "mrr"}
    found = await read_topic(
        module_broker.bootstrap_servers,
        topics.ACCOUNTS,
        match=lambda e: e.account_id == account,
        count=3,
        settle=1.0,  # the consumer sees these too; it must not answer them
    )
    kinds = sorted(e.type for e in found)
    assert kinds == ["account.owner_changed", "account.upserted", "account.upserted"]
    assert all(e.source == "health" for e in found)
    changed = next(e for e in found if e.type == "account.owner_changed")
    assert changed.data["previous_owner"] == "ann@example.com"


async def test_accounts_from_the_topic_and_filters(
    api: Running, send: Callable[[list[Any]], Awaitable[None]]
) -> None:
    busy, quiet = new_account("busy"), new_account("quiet")
    segment, csm = f"seg-{busy}", f"{busy}@example.com"
    await send(
        [
            account_upsert(busy, day_at(60), segment=segment, owner=csm, plan="pro"),
            account_upsert(quiet, day_at(60), segment=segment, owner=csm),
            contact_upsert(busy, day_at(5), user_id="ann", email="ann@busy.example", role="admin"),
            *daily_usage(busy, [8] * 60),
            *daily_usage(quiet, QUIET),
        ]
    )
    await settle(api)

    async def listed() -> Any:
        async with client(api, "read") as c:
            r = await c.get("/v1/accounts", params={"segment": segment, "sort": "score"})
        items = r.json()["items"]
        return items if len(items) == 2 and all(i["health"] for i in items) else None

    items = await until(listed)
    assert [i["account_id"] for i in items] == [quiet, busy]  # lowest score first
    assert items[1]["plan"] == "pro" and items[1]["first_seen"] == day_at(60).date().isoformat()
    async with client(api, "read") as c:
        red = await c.get("/v1/accounts", params={"segment": segment, "band": "red"})
        assert [i["account_id"] for i in red.json()["items"]] == [quiet]
        mine = await c.get("/v1/accounts", params={"owner": csm.upper(), "sort": "-score"})
        assert [i["account_id"] for i in mine.json()["items"]] == [busy, quiet]
        assert (await c.get("/v1/accounts/nope")).status_code == 404
        one = (await c.get(f"/v1/accounts/{busy}")).json()
        assert [(p["user_id"], p["email"], p["role"]) for p in one["contacts"]] == [
            ("ann", "ann@busy.example", "admin")
        ]
        assert (await c.get("/v1/accounts", params={"sort": "bogus"})).status_code == 422


async def test_metrics_config_validation_and_new_metric_rolls_up(
    api: Running, send: Callable[[list[Any]], Awaitable[None]]
) -> None:
    async with client(api) as c:
        config = (await c.get("/v1/config/metrics")).json()
        assert [m["key"] for m in config["metrics"]] == ["events", "active_users"]
        bad = {"metrics": [{"key": "rows", "kind": "sum"}]}
        r = await c.put("/v1/config/metrics", json=bad)
        assert r.status_code == 422 and "property" in r.text
        config["metrics"].append(
            {"key": "rows", "name": "Rows imported", "kind": "sum", "property": "rows"}
        )
        assert (await c.put("/v1/config/metrics", json=config)).status_code == 200
    account = new_account()
    await send(
        [
            usage(account, day_at(1), properties={"rows": 5}),
            usage(account, day_at(1, 1), properties={"rows": "2"}),
        ]
    )

    async def rows() -> Any:
        async with client(api, "read") as c:
            r = await c.get(f"/v1/accounts/{account}/metrics", params={"days": 3})
        if r.status_code != 200:
            return None
        series = {m["metric"]: m["values"] for m in r.json()["metrics"]}
        return series if series["rows"][1] == 7.0 else None

    series = await until(rows, timeout=60)
    assert series["events"][1] == 2.0 and series["active_users"][1] == 1.0


async def test_alert_lifecycle_ack_snooze_resolve_cooldown_reopen_autoresolve(
    api: Running, send: Callable[[list[Any]], Awaitable[None]], module_broker: EmbeddedBroker
) -> None:
    account = new_account()
    await send(daily_usage(account, QUIET))
    [alert] = await until(lambda: alerts_of(api, account, rule_id="inactivity"), running=api)
    assert alert["id"] == alert_id(account, "inactivity", 1) and alert["status"] == "open"
    assert alert["reason"] == "no activity for 20 days" and alert["severity"] == 4
    url = f"/v1/alerts/{alert['id']}"
    async with client(api, "write") as c:
        assert (await c.post(f"{url}/ack")).json()["status"] == "acknowledged"
        assert (await c.post(f"{url}/snooze", json={})).status_code == 422
        past = await c.post(f"{url}/snooze", json={"until": "2020-01-01T00:00:00Z"})
        assert past.status_code == 422 and past.json()["detail"][0]["loc"] == ["body", "until"]
        soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
        snoozed = (await c.post(f"{url}/snooze", json={"until": soon})).json()
        assert snoozed["status"] == "snoozed" and snoozed["snoozed_until"]
        await asyncio.sleep(1.1)  # let the snooze run out (wall clock)
        await c.post("/v1/recompute")  # still inactive: the alert wakes up
        woke = (await c.get(url)).json()
        assert woke["status"] == "open" and woke["snoozed_until"] is None
        resolved = (await c.post(f"{url}/resolve")).json()
        assert resolved["status"] == "resolved" and resolved["resolved_by"] == "user"
        assert (await c.post(f"{url}/ack")).status_code == 409
        await c.post("/v1/recompute")  # still inactive, but within the 14-day cool-down
    assert len(await alerts_of(api, account, rule_id="inactivity")) == 1
    async with client(api) as c:
        rule = (await c.get("/v1/alert-rules/inactivity")).json()
        rule.update(cooldown_days=0)
        body = {
            k: rule[k] for k in ("type", "name", "enabled", "severity", "cooldown_days", "params")
        }
        assert (await c.put("/v1/alert-rules/inactivity", json=body)).status_code == 200
        await c.post("/v1/recompute")
    reopened = await alerts_of(api, account, rule_id="inactivity", status="open")
    assert [a["id"] for a in reopened] == [alert_id(account, "inactivity", 2)]
    await send([usage(account, day_at(1))])  # activity again: the condition clears

    async def auto_resolved() -> Any:
        found = await alerts_of(api, account, rule_id="inactivity", status="resolved")
        return [a for a in found if a["resolved_by"] == "auto"]

    await until(auto_resolved, running=api)
    published = await read_topic(
        module_broker.bootstrap_servers,
        topics.HEALTH_ALERTS,
        match=lambda e: e.account_id == account and e.data["rule_id"] == "inactivity",
        count=7,
        settle=0.3,
    )
    assert [e.type for e in published] == [
        "alert.opened",
        "alert.updated",  # acknowledged
        "alert.updated",  # snoozed
        "alert.updated",  # woke up
        "alert.resolved",
        "alert.opened",
        "alert.resolved",
    ]


async def test_budget_defers_lowest_priority_to_the_digest(
    api: Running, send: Callable[[list[Any]], Awaitable[None]]
) -> None:
    owner = f"{new_account('csm')}@example.com"
    big, small = new_account("big"), new_account("small")
    async with client(api) as c:
        assert (await c.put("/v1/config/alerts", json={"daily_budget_per_csm": 0})).is_success
        r = await c.put("/v1/config/alerts", json={"daily_budget_per_csm": -1})
        assert r.status_code == 422
    await send(
        [
            account_upsert(big, day_at(60), owner=owner, mrr=1000),
            account_upsert(small, day_at(60), owner=owner, mrr=10),
            *daily_usage(big, QUIET),
            *daily_usage(small, QUIET),
        ]
    )

    async def owner_alerts(minimum: int) -> Any:
        async with client(api, "read") as c:
            r = await c.get("/v1/alerts", params={"owner": owner})
        items = r.json()["items"]
        return items if len(items) >= minimum else None

    # inactivity (severity 4) and metric decline (3) for both accounts, none within budget
    items = await until(lambda: owner_alerts(4))
    assert {a["status"] for a in items} == {"deferred"}
    async with client(api) as c:
        digest = (await c.get("/v1/alerts/digest")).json()
        assert {a["id"] for a in digest["owners"][owner]} == {a["id"] for a in items}
        assert (await c.put("/v1/config/alerts", json={"daily_budget_per_csm": 1})).is_success
        await c.post("/v1/recompute")
        items = (await c.get("/v1/alerts", params={"owner": owner})).json()["items"]
        digest = (await c.get("/v1/alerts/digest")).json()
    opened = [a for a in items if a["status"] == "open"]
    assert [(a["account_id"], a["rule_id"]) for a in opened] == [(big, "inactivity")]
    assert len(digest["owners"][owner]) == 3 and opened[0]["priority"] == 4000


async def test_rules_crud_and_backtest(
    api: Running, send: Callable[[list[Any]], Awaitable[None]]
) -> None:
    account = new_account()
    await send(daily_usage(account, QUIET))
    await until(lambda: alerts_of(api, account, rule_id="inactivity"), running=api)
    rule = {"id": "quiet-week", "type": "inactivity", "name": "Quiet week", "params": {"days": 7}}
    async with client(api) as c:
        assert {r["id"] for r in (await c.get("/v1/alert-rules")).json()} >= {
            "band-drop",
            "score-drop",
            "metric-decline",
            "inactivity",
            "expansion-growth",
            "onboarding-stalled",
            "owner-changed",
            "renewal-risk",
        }
        assert (await c.post("/v1/alert-rules", json=rule)).status_code == 201
        assert (await c.post("/v1/alert-rules", json=rule)).status_code == 409
        bad = await c.post("/v1/alert-rules", json={**rule, "id": "x", "params": {"days": 0}})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == [
            "body",
            "params",
            "days",
        ]
        unknown = await c.post("/v1/alert-rules", json={**rule, "id": "y", "type": "nope"})
        assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["body", "type"]
        r = await c.post("/v1/alert-rules/quiet-week/backtest", params={"days": 30})
        assert r.status_code == 200, r.text
        result = r.json()
        assert result["total"] >= 1 and account in {a["account_id"] for a in result["accounts"]}
        stricter = await c.post(
            "/v1/alert-rules/quiet-week/backtest",
            params={"days": 30},
            json={"params": {"days": 25}},
        )
        assert account not in {a["account_id"] for a in stricter.json()["accounts"]}
        assert (await c.post("/v1/alert-rules/none/backtest")).status_code == 404
        async with client(api, "write") as w:
            assert (await w.delete("/v1/alert-rules/quiet-week")).status_code == 403
        assert (await c.delete("/v1/alert-rules/quiet-week")).status_code == 204
        assert (await c.get("/v1/alert-rules/quiet-week")).status_code == 404


async def test_scheduled_recompute_applies_a_changed_rule(
    module_broker: EmbeddedBroker, tmp_path: Path, send: Callable[[list[Any]], Awaitable[None]]
) -> None:
    """The scheduler, not the database, is under test here: SQLite only."""
    db = f"sqlite+aiosqlite:///{tmp_path / 'health.db'}"
    settings = health_settings(
        module_broker.bootstrap_servers, db, tmp_path, HEALTH_RECOMPUTE_INTERVAL=0.5
    )
    app = create_app(settings)
    account = new_account()
    await send(daily_usage(account, QUIET))
    async with serve_app(app) as url:
        running = Running(url, app, settings)
        [alert] = await until(lambda: alerts_of(running, account, rule_id="inactivity"))
        async with client(running) as c:
            body = {"type": "inactivity", "name": "Inactive a month", "params": {"days": 30}}
            assert (await c.put("/v1/alert-rules/inactivity", json=body)).status_code == 200
        # no event and no POST /v1/recompute: only the schedule can resolve it
        resolved = await until(
            lambda: alerts_of(running, account, rule_id="inactivity", status="resolved")
        )
        assert resolved[0]["id"] == alert["id"] and resolved[0]["resolved_by"] == "auto"


async def test_a_malformed_event_is_dead_lettered_and_the_rest_flows(
    private_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """The handler refuses what it cannot read; the shared runner dead-letters just that one.

    A broker of its own: the runner retries the batch, then handles it one record at a
    time, so a topic holding only these three keeps the test short.
    """
    db = f"sqlite+aiosqlite:///{tmp_path / 'health.db'}"
    settings = health_settings(private_broker.bootstrap_servers, db, tmp_path)
    account = new_account()
    bad = usage(account, day_at(2))
    bad = bad.model_copy(update={"data": {"event": "x"}})  # no message_id, no timestamp
    pub = Publisher(private_broker.bootstrap_servers, client_id="poison")
    await pub.start()
    await publish(pub, [bad, usage(account, day_at(2, 1)), usage(account, day_at(2, 2))])
    await pub.stop()
    gc.unfreeze()
    app = create_app(settings)
    async with serve_app(app) as url:
        assert gc.get_freeze_count() > 0  # startup's objects are out of the collector's way
        running = Running(url, app, settings)

        async def rolled_up() -> Any:
            async with client(running, "read") as c:
                r = await c.get(f"/v1/accounts/{account}/metrics", params={"days": 4})
            return r.status_code == 200 and r.json()["metrics"][0]["values"][1] == 2.0

        await until(rolled_up, timeout=60)
    [dead] = await read_topic(
        private_broker.bootstrap_servers,
        topics.dlq(topics.USAGE_EVENTS),
        match=lambda e: e.account_id == account,
        count=1,
    )
    assert dead.id == bad.id
