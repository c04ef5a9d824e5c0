"""Health's audit trail: alert rule and config changes recorded with who, what, target and
result; GET /v1/audit filters and scope; no secret in a row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from shared.audit import AUDIT_LOG
from shared.auth import create_token, verify_token
from shared.db import create_engine
from tests.health.conftest import Running
from tests.support import TEST_SECRET, auth, http_client

HOOK = "https://hooks.slack.com/services/T0AUDIT/B0AUDIT/hooksecret123456"
API_KEY = "sk_live_auditsecret0987654321"


def bearer(scope: str, subject: str) -> tuple[str, str]:
    """A token for ``subject`` and its id (jti)."""
    token = create_token(TEST_SECRET, scopes=[scope], subject=subject)
    return token, verify_token(TEST_SECRET, token).token_id


async def stored_rows(api: Running) -> list[dict[str, Any]]:
    """Every audit row as the database holds it (not through the API)."""
    engine = create_engine(api.settings.database_url("health"))
    try:
        async with engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(select(AUDIT_LOG))]
    finally:
        await engine.dispose()


async def test_rule_and_config_changes_are_audited(api: Running) -> None:
    alice, alice_id = bearer("admin", "ops-alice")
    bob, bob_id = bearer("write", "ops-bob")
    rule = {"id": "quiet-audit", "type": "inactivity", "name": "Quiet", "params": {"days": 7}}
    async with http_client(base_url=api.url, timeout=30) as c:
        a = {"Authorization": f"Bearer {alice}"}
        assert (await c.post("/v1/alert-rules", json=rule, headers=a)).status_code == 201
        replaced = {**rule, "name": f"Quiet (page {HOOK})"}
        del replaced["id"]
        r = await c.put("/v1/alert-rules/quiet-audit", json=replaced, headers=a)
        assert r.status_code == 200, r.text
        refused = {**rule, "id": "leaky", "params": {"days": 7, "api_key": API_KEY}}
        assert (await c.post("/v1/alert-rules", json=refused, headers=a)).status_code == 422
        r = await c.put("/v1/config/alerts", json={"daily_budget_per_csm": 40}, headers=a)
        assert r.status_code == 200, r.text
        assert (await c.get("/v1/alert-rules", headers=a)).status_code == 200  # not audited
        b = {"Authorization": f"Bearer {bob}"}
        assert (await c.delete("/v1/alert-rules/quiet-audit", headers=b)).status_code == 403
        assert (await c.delete("/v1/alert-rules/quiet-audit", headers=a)).status_code == 204

        page = await c.get("/v1/audit", headers=a)
        assert page.status_code == 200, page.text
        items = page.json()["items"]
        assert page.json()["total"] == 6
        # newest first
        assert [(i["action"], i["status"]) for i in items] == [
            ("delete_rule", 204),
            ("delete_rule", 403),
            ("put_alert_budget", 200),
            ("create_rule", 422),
            ("replace_rule", 200),
            ("create_rule", 201),
        ]
        created = items[-1]
        assert created["subject"] == "ops-alice" and created["token_id"] == alice_id
        assert created["method"] == "POST" and created["path"] == "/v1/alert-rules"
        assert created["route"] == "POST /v1/alert-rules"
        assert created["target"] == "quiet-audit"  # from the created rule
        assert created["summary"]["body"]["params"] == {"days": 7}
        replace = items[-2]
        assert replace["target"] == "quiet-audit" and replace["route"] == (
            "PUT /v1/alert-rules/{rule_id}"
        )
        assert replace["summary"]["body"]["name"] == "[redacted]"
        assert items[2]["summary"]["body"] == {"daily_budget_per_csm": 40}
        assert items[3]["summary"]["body"]["params"]["api_key"] == "[redacted]"
        denied = items[1]
        assert denied["subject"] == "ops-bob" and denied["token_id"] == bob_id
        assert datetime.fromisoformat(items[0]["at"]) >= datetime.fromisoformat(items[-1]["at"])

        async def actions(**params: Any) -> list[tuple[str, str]]:
            r = await c.get("/v1/audit", params=params, headers=a)
            assert r.status_code == 200, r.text
            return [(i["subject"], i["action"]) for i in r.json()["items"]]

        assert await actions(subject="ops-bob") == [("ops-bob", "delete_rule")]
        assert await actions(action="delete_rule") == [
            ("ops-alice", "delete_rule"),
            ("ops-bob", "delete_rule"),
        ]
        assert await actions(action="PUT /v1/alert-rules/{rule_id}") == [
            ("ops-alice", "replace_rule")
        ]
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert await actions(since=future) == []
        past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        assert len(await actions(since=past, subject="ops-alice")) == 5
        assert len(await actions(limit=2, offset=4)) == 2

        for params in ({"since": "yesterday"}, {"since": "0.5"}, {"limit": 0}, {"actor": "x"}):
            bad = await c.get("/v1/audit", params=params, headers=a)
            assert bad.status_code == 422, (params, bad.text)
        assert (await c.get("/v1/audit", headers=auth("read"))).status_code == 403
        assert (await c.get("/v1/audit", headers=auth("write"))).status_code == 403
        assert (await c.get("/v1/audit")).status_code == 401

    raw = repr(await stored_rows(api))
    assert "hooksecret123456" not in raw and "hooks.slack.com" not in raw
    assert API_KEY not in raw
    assert alice not in raw and bob not in raw


async def test_a_metrics_config_change_is_audited(api: Running) -> None:
    admin, admin_id = bearer("admin", "ops-metrics")
    headers = {"Authorization": f"Bearer {admin}"}
    async with http_client(base_url=api.url, timeout=30, headers=headers) as c:
        config = (await c.get("/v1/config/metrics")).json()
        assert (await c.put("/v1/config/metrics", json=config)).status_code == 200
        r = await c.get("/v1/audit", params={"subject": "ops-metrics"})
        assert r.status_code == 200, r.text
        [row] = r.json()["items"]
    assert row["route"] == "PUT /v1/config/metrics" and row["status"] == 200
    assert row["token_id"] == admin_id
    assert row["summary"]["body"]["metrics"] == config["metrics"]
    assert admin not in repr(await stored_rows(api))
