"""REST: templates (admin), suppressions (write), deliveries (read), scopes and 4xx answers."""

from __future__ import annotations

import asyncio
import time

from shared.broker import EmbeddedBroker
from shared.messages import Recipient
from tests.notify.conftest import (
    NotifyHarness,
    SmtpServer,
    new_account,
    new_email,
    publish,
    request,
)
from tests.support import auth, http_client

BUILTIN_IDS = {
    "welcome",
    "onboarding-setup",
    "onboarding-first-cycle",
    "tech-touch-day-3",
    "tech-touch-day-7",
    "tech-touch-day-14",
    "adoption-checkin",
    "reengagement",
    "expansion-owner-slack",
    "renewal-prep",
    "owner-handoff",
    "alert-owner-slack",
}
CUSTOM = {
    "id": "qbr-invite",
    "name": "QBR invite",
    "channel": "email",
    "subject": "QBR for {{ account_name }}",
    "html": "<p>Hi {{ recipient.first_name }}, {{ csm_name }} here. <a href='https://cal.example/qbr'>Book</a></p>",
}


async def test_templates_crud_validation_preview_and_use(
    harness: NotifyHarness, smtp: SmtpServer, broker: EmbeddedBroker
) -> None:
    base = await harness.start()
    async with http_client(base_url=base) as client:
        assert (await client.get("/v1/templates")).status_code == 401
        listed = await client.get("/v1/templates", headers=auth("read"))
        assert {t["id"] for t in listed.json()} >= BUILTIN_IDS
        assert all(t["builtin"] for t in listed.json())

        assert (
            await client.post("/v1/templates", json=CUSTOM, headers=auth("write"))
        ).status_code == 403
        created = await client.post("/v1/templates", json=CUSTOM, headers=auth("admin"))
        assert created.status_code == 201, created.text
        dup = await client.post("/v1/templates", json=CUSTOM, headers=auth("admin"))
        assert dup.status_code == 409

        for field, source in [
            ("subject", "{{ unclosed"),
            ("html", "{{ foo() }}"),
            ("html", "{{ 1/0 }}"),
            ("html", "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"),
            ("html", "{{ 'ab' * 100000000 }}"),
            ("subject", "{{ 9 ** 999999 }}"),
        ]:
            bad = await client.put(
                "/v1/templates/broken", json={**CUSTOM, field: source}, headers=auth("admin")
            )
            assert bad.status_code == 422, bad.text
            assert bad.json()["detail"][0]["loc"] == ["body", field]
        no_subject = {**CUSTOM, "subject": None}
        r = await client.put("/v1/templates/broken", json=no_subject, headers=auth("admin"))
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "subject"]
        recursive = {**CUSTOM, "html": "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"}
        r = await client.post(
            "/v1/templates", json={**recursive, "id": "loop"}, headers=auth("admin")
        )
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "html"]
        untyped = {
            "name": "s",
            "channel": "slack",
            "text": "hi",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x"}}, {"a": 1}],
        }
        r = await client.put("/v1/templates/untyped", json=untyped, headers=auth("admin"))
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "blocks"]
        assert "blocks[1].type" in r.json()["detail"][0]["msg"]
        repeat = {**CUSTOM, "html": "<p>{{ 'x' * times }}</p>", "sample_context": {"times": 2}}
        r = await client.put("/v1/templates/repeat", json=repeat, headers=auth("admin"))
        assert r.status_code == 201, r.text
        r = await client.post(
            "/v1/templates/repeat/preview",
            json={"context": {"times": 10**8}},
            headers=auth("read"),
        )
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "html"]
        r = await client.put("/v1/templates/Bad%20Id", json=CUSTOM, headers=auth("admin"))
        assert r.status_code == 422
        assert (await client.get("/v1/templates/broken", headers=auth("read"))).status_code == 404

        preview = await client.post(
            "/v1/templates/qbr-invite/preview",
            json={"context": {"account_name": "Zed & <Co>"}},
            headers=auth("read"),
        )
        assert preview.status_code == 200
        assert preview.json()["subject"] == "QBR for Zed & <Co>"
        assert "Hi Ada, Grace Hopper here." in preview.json()["text"]
        slack = await client.post(
            "/v1/templates/alert-owner-slack/preview", json={}, headers=auth("read")
        )
        assert slack.json()["channel"] == "slack" and slack.json()["blocks"]

        # Override a built-in, then delete the override: the built-in is back, and stays.
        override = {**CUSTOM, "subject": "Hello {{ account_name }}"}
        r = await client.put("/v1/templates/welcome", json=override, headers=auth("admin"))
        assert r.status_code == 200 and r.json()["overrides_builtin"] is True
        assert (
            await client.delete("/v1/templates/welcome", headers=auth("admin"))
        ).status_code == 204
        got = await client.get("/v1/templates/welcome", headers=auth("read"))
        assert got.json()["builtin"] is True and "onboarding" in got.json()["subject"]
        assert (
            await client.delete("/v1/templates/welcome", headers=auth("admin"))
        ).status_code == 409

        # A custom template is what a request naming it gets.
        account, ada = new_account(), new_email()
        await publish(broker, account, request(to=[Recipient(email=ada)], template_id="qbr-invite"))
        [received] = await smtp.inbox.wait_for(ada, 1)
        assert received.message["Subject"] == "QBR for Acme"


async def test_suppressions_and_delivery_filters(
    harness: NotifyHarness, smtp: SmtpServer, broker: EmbeddedBroker
) -> None:
    base = await harness.start()
    account, ada, bob = new_account(), new_email("ada"), new_email("bob")
    async with http_client(base_url=base) as client:
        body = {"email": bob.upper(), "reason": "manual", "note": "asked by phone"}
        assert (
            await client.post("/v1/suppressions", json=body, headers=auth("read"))
        ).status_code == 403
        r = await client.post("/v1/suppressions", json=body, headers=auth("write"))
        assert r.status_code == 201 and r.json()["email"] == bob
        assert (
            await client.post("/v1/suppressions", json=body, headers=auth("write"))
        ).status_code == 200
        bad = await client.post("/v1/suppressions", json={"email": "nope"}, headers=auth("write"))
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "email"]
        nul = await client.post(
            "/v1/suppressions", json={"email": "a\u0000@x.test"}, headers=auth("write")
        )
        assert nul.status_code == 422 and nul.json()["detail"][0]["loc"] == ["body", "email"]
        assert (await client.get("/v1/suppressions/a%00b", headers=auth("read"))).status_code == 422
        nul_query = await client.get("/v1/deliveries?account_id=a%00b", headers=auth("read"))
        assert nul_query.status_code == 422
        listed = await client.get("/v1/suppressions", headers=auth("read"))
        assert bob in [s["email"] for s in listed.json()]

        await publish(
            broker,
            account,
            request(to=[Recipient(email=ada), Recipient(email=bob)], template_id="reengagement"),
        )
        await smtp.inbox.wait_for(ada, 1)
        deadline = time.monotonic() + 10
        rows: list[dict[str, str]] = []
        while time.monotonic() < deadline:
            r = await client.get(
                "/v1/deliveries", params={"account_id": account}, headers=auth("read")
            )
            rows = r.json()["items"]
            if sorted(x["status"] for x in rows) == ["sent", "suppressed"]:
                break
            await asyncio.sleep(0.05)
        assert {x["recipient"]: x["status"] for x in rows} == {ada: "sent", bob: "suppressed"}
        assert smtp.inbox.to(bob) == []

        by_status = await client.get(
            "/v1/deliveries", params={"account_id": account, "status": "sent"}, headers=auth("read")
        )
        assert [x["recipient"] for x in by_status.json()["items"]] == [ada]
        by_recipient = await client.get(
            "/v1/deliveries", params={"recipient": bob.upper()}, headers=auth("read")
        )
        assert [x["status"] for x in by_recipient.json()["items"]] == ["suppressed"]
        none = await client.get(
            "/v1/deliveries",
            params={"account_id": account, "channel": "slack"},
            headers=auth("read"),
        )
        assert none.json()["items"] == []
        invalid = await client.get(
            "/v1/deliveries", params={"status": "lost"}, headers=auth("read")
        )
        assert invalid.status_code == 422 and invalid.json()["detail"][0]["loc"] == [
            "query",
            "status",
        ]
        huge = await client.get("/v1/deliveries", params={"offset": 10**27}, headers=auth("read"))
        assert huge.status_code == 422 and huge.json()["detail"][0]["loc"] == ["query", "offset"]
        typo = await client.get(
            "/v1/deliveries", params={"acount_id": account}, headers=auth("read")
        )
        assert typo.status_code == 422 and typo.json()["detail"][0]["loc"] == ["query", "acount_id"]
        one = await client.get(f"/v1/deliveries/{rows[0]['id']}", headers=auth("read"))
        assert one.status_code == 200 and one.json()["id"] == rows[0]["id"]
        assert (await client.get("/v1/deliveries/nope", headers=auth("read"))).status_code == 404

        assert (
            await client.delete(f"/v1/suppressions/{bob}", headers=auth("write"))
        ).status_code == 204
        assert (
            await client.delete(f"/v1/suppressions/{bob}", headers=auth("write"))
        ).status_code == 404
