"""Notify's audit trail and the REST write rate limit: template and suppression changes
recorded without their secrets, a failed audit write that leaves the action alone, the
retention prune, and 429 + Retry-After per token past the burst."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from shared.audit import AUDIT_LOG, AUDIT_WRITE_FAILURES, AuditEntry, write_entry
from shared.auth import create_token, verify_token
from shared.db import create_engine, create_sessionmaker
from shared.migrations import upgrade_async
from tests.notify.conftest import NotifyHarness, new_email
from tests.support import TEST_SECRET, http_client

HOOK = "https://hooks.slack.com/services/T0NOTIFY/B0NOTIFY/notifyhooksecret42"
SLACK_TOKEN = "xoxb-1234567890-notifyslacksecret"
PASSWORD = "smtp-pw-notifysecret77"
HEADER_SECRET = "Bearer notifyheadersecret0123456789"
SECRETS = ("notifyhooksecret42", "notifyslacksecret", PASSWORD, "notifyheadersecret")


def bearer(scope: str, subject: str) -> tuple[dict[str, str], str, str]:
    """Headers with a token for ``subject``, its id, and the raw token."""
    token = create_token(TEST_SECRET, scopes=[scope], subject=subject)
    return {"Authorization": f"Bearer {token}"}, verify_token(TEST_SECRET, token).token_id, token


async def stored_rows(db_url: str) -> list[dict[str, Any]]:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(select(AUDIT_LOG))]
    finally:
        await engine.dispose()


TEMPLATE = {
    "id": "audit-secret",
    "name": "Ops ping",
    "channel": "slack",
    "text": f"Deploy done; hook {HOOK} token {SLACK_TOKEN}",
    "sample_context": {
        "webhook_url": HOOK,
        "smtp_password": PASSWORD,
        "headers": {"Authorization": HEADER_SECRET},
        "plan": "enterprise",
    },
}


async def test_template_and_suppression_changes_are_audited_without_secrets(
    harness: NotifyHarness,
) -> None:
    base = await harness.start()
    admin, admin_id, admin_token = bearer("admin", "ops-erin")
    writer, writer_id, writer_token = bearer("write", "csm-finn")
    email = new_email()
    async with http_client(base_url=base, timeout=30) as c:
        r = await c.post("/v1/templates", json=TEMPLATE, headers=admin)
        assert r.status_code == 201, r.text
        changed = {k: v for k, v in TEMPLATE.items() if k != "id"} | {"name": "Ops ping 2"}
        r = await c.put("/v1/templates/audit-secret", json=changed, headers=admin)
        assert r.status_code == 200, r.text
        r = await c.post("/v1/templates", json=TEMPLATE, headers=writer)
        assert r.status_code == 403
        r = await c.post(
            "/v1/suppressions", json={"email": email, "note": f"asked by {HOOK}"}, headers=writer
        )
        assert r.status_code == 201, r.text
        assert (await c.delete(f"/v1/suppressions/{email}", headers=writer)).status_code == 204
        assert (await c.delete("/v1/templates/audit-secret", headers=admin)).status_code == 204

        r = await c.get("/v1/audit", headers=admin)
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert [(i["subject"], i["action"], i["target"], i["status"]) for i in items] == [
            ("ops-erin", "delete_template", "audit-secret", 204),
            ("csm-finn", "remove_suppression", email, 204),
            ("csm-finn", "add_suppression", email, 201),
            ("csm-finn", "create_template", None, 403),
            ("ops-erin", "put_template", "audit-secret", 200),
            ("ops-erin", "create_template", "audit-secret", 201),
        ]
        assert {i["token_id"] for i in items if i["subject"] == "ops-erin"} == {admin_id}
        assert {i["token_id"] for i in items if i["subject"] == "csm-finn"} == {writer_id}
        created = items[-1]["summary"]["body"]
        assert created["channel"] == "slack" and created["name"] == "Ops ping"
        assert created["text"] == "[redacted]"
        assert created["sample_context"] == {
            "webhook_url": "[redacted]",
            "smtp_password": "[redacted]",
            "headers": {"Authorization": "[redacted]"},
            "plan": "enterprise",
        }
        assert items[2]["summary"]["body"]["email"] == email
        assert items[2]["route"] == "POST /v1/suppressions"
        assert items[1]["route"] == "DELETE /v1/suppressions/{email}"
        assert (await c.get("/v1/audit", headers=writer)).status_code == 403
        assert (await c.get("/v1/audit", params={"since": "now"}, headers=admin)).status_code == 422

    raw = repr(await stored_rows(harness.db_url))
    for secret in (*SECRETS, admin_token, writer_token):
        assert secret not in raw


async def test_a_failed_audit_write_is_logged_and_the_action_stands(
    harness: NotifyHarness, capfd: pytest.CaptureFixture[str]
) -> None:
    base = await harness.start()
    engine = create_engine(harness.db_url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE audit_log"))
    await engine.dispose()
    admin, _, token = bearer("admin", "ops-gail")
    email = new_email()
    failures = AUDIT_WRITE_FAILURES._value.get()
    async with http_client(base_url=base, timeout=30) as c:
        body = {"email": email, "note": f"hook {HOOK} pw {PASSWORD}"}
        r = await c.post("/v1/suppressions", json=body, headers=admin)
        assert r.status_code == 201, r.text
        assert (await c.get(f"/v1/suppressions/{email}", headers=admin)).status_code == 200
    assert AUDIT_WRITE_FAILURES._value.get() == failures + 1
    logged = capfd.readouterr().err
    assert "audit.write_failed" in logged
    for secret in (*SECRETS, token):
        assert secret not in logged


async def test_rows_past_the_retention_are_pruned_at_start(harness: NotifyHarness) -> None:
    await upgrade_async("notify", harness.db_url)
    engine = create_engine(harness.db_url)
    now = datetime.now(UTC)

    def entry(days_ago: int) -> AuditEntry:
        return AuditEntry(
            at=now - timedelta(days=days_ago),
            subject=f"old-{days_ago}",
            token_id="t",
            method="POST",
            path="/v1/suppressions",
            action="add_suppression",
            route="POST /v1/suppressions",
            target=None,
            status=201,
            summary=None,
        )

    sessions = create_sessionmaker(engine)
    for days in (400, 31, 29, 1):
        await write_entry(sessions, entry(days))
    await engine.dispose()
    base = await harness.start(AUDIT_RETENTION_DAYS=30)
    admin, _, _ = bearer("admin", "ops-hal")
    async with http_client(base_url=base, timeout=30) as c:
        deadline = time.monotonic() + 20
        while True:
            r = await c.get("/v1/audit", headers=admin)
            assert r.status_code == 200, r.text
            subjects = [i["subject"] for i in r.json()["items"]]
            if subjects == ["old-1", "old-29"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)  # polling: the pruner's first pass runs at start
        assert subjects == ["old-1", "old-29"]


async def test_writes_past_the_burst_get_429_per_token(harness: NotifyHarness) -> None:
    # A slow refill (one write per 100 s) so nothing refills while the test runs.
    base = await harness.start(API_WRITE_RATE=0.01, API_WRITE_BURST=3)
    first, _, _ = bearer("write", "burst-ivy")
    other, _, _ = bearer("write", "burst-jo")
    admin, _, _ = bearer("admin", "ops-kim")
    async with http_client(base_url=base, timeout=30) as c:
        for _ in range(3):
            r = await c.post("/v1/suppressions", json={"email": new_email()}, headers=first)
            assert r.status_code == 201, r.text
        r = await c.post("/v1/suppressions", json={"email": new_email()}, headers=first)
        assert r.status_code == 429, r.text
        assert isinstance(r.json()["detail"], str) and "rate limit" in r.json()["detail"]
        retry = r.headers["Retry-After"]
        assert retry.isdigit() and 1 <= int(retry) <= 100
        # the same token can still read; another token can still write
        assert (await c.get("/v1/suppressions", headers=first)).status_code == 200
        r = await c.post("/v1/suppressions", json={"email": new_email()}, headers=other)
        assert r.status_code == 201, r.text
        r = await c.get("/v1/audit", params={"subject": "burst-ivy"}, headers=admin)
        assert [i["status"] for i in r.json()["items"]] == [201, 201, 201]  # no 429 rows
        spec = (await c.get("/openapi.json")).json()
        assert "429" in spec["paths"]["/v1/suppressions"]["post"]["responses"]
        assert "429" not in spec["paths"]["/v1/suppressions"]["get"]["responses"]
