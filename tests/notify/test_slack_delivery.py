"""Slack delivery against a stand-in Slack API on loopback (a real uvicorn server)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from shared import topics
from shared.broker import EmbeddedBroker
from shared.messages import DeliveryChanged, Recipient
from tests.notify.conftest import NotifyHarness, new_account, publish, request
from tests.support import auth, http_client, read_topic, serve_app


@dataclass
class SlackStandIn:
    """Answers from a per-channel script (then 200 ok); records every call."""

    scripts: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    calls: list[tuple[float, str, dict[str, Any], str | None]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/chat.postMessage")
        async def post_message(request: Request) -> JSONResponse:
            body = await request.json()
            return self._answer(body.get("channel", ""), body, request)

        @app.post("/webhook/{team}/{hook}")
        async def webhook(team: str, hook: str, request: Request) -> JSONResponse:
            return self._answer(f"webhook:{hook}", await request.json(), request)

        return app

    def _answer(self, channel: str, body: dict[str, Any], request: Request) -> JSONResponse:
        self.calls.append((time.monotonic(), channel, body, request.headers.get("authorization")))
        script = self.scripts.get(channel)
        if script:
            status, headers = script.pop(0)
            return JSONResponse({"ok": False, "error": "x"}, status_code=status, headers=headers)
        return JSONResponse({"ok": True, "ts": "1.0"})

    def to(self, channel: str) -> list[tuple[float, str, dict[str, Any], str | None]]:
        return [c for c in self.calls if c[1] == channel]


async def wait_until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        await asyncio.sleep(0.05)


async def test_429_then_500_then_200_sends_once_after_the_right_waits(
    harness: NotifyHarness, broker: EmbeddedBroker
) -> None:
    if not harness.db_url.startswith("sqlite"):
        pytest.skip("database-agnostic; retry state on both backends: the SMTP 4xx test")
    slack = SlackStandIn()
    channel = f"#cs-{uuid.uuid4().hex[:6]}"
    slack.scripts[channel] = [(429, {"Retry-After": "1"}), (500, {})]
    account = new_account()
    async with serve_app(slack.app()) as slack_url:
        base = await harness.start(SLACK_API_BASE=slack_url, SLACK_BOT_TOKEN="xoxb-test")
        req = request(
            channel="slack",
            template_id="alert-owner-slack",
            to=[Recipient(slack_channel=channel)],
            context={"account_name": "Acme", "alert_title": "Usage dropped", "reason": "a<b"},
        )
        await publish(broker, account, req, req)
        await wait_until(lambda: len(slack.to(channel)) >= 3)
        events = await read_topic(
            broker.bootstrap_servers,
            topics.NOTIFY_DELIVERIES,
            match=lambda e: e.account_id == account,
            count=3,
            settle=1.0,
        )
        async with http_client(base_url=base, headers=auth("read")) as client:
            log = (await client.get("/v1/deliveries", params={"account_id": account})).json()
    calls = slack.to(channel)
    assert len(calls) == 3  # one message, delivered by the third attempt, never again
    (t1, _, body, authz), (t2, *_), (t3, *_) = calls
    assert authz == "Bearer xoxb-test"
    assert body["text"] == ":rotating_light: Usage dropped on Acme: a&lt;b"
    assert body["blocks"][0]["type"] == "header"
    # Retry-After honoured (at most 10 % more), the backoff after the 500 (second failure)
    # is 0.3 * 2 +-25 %; above, a margin for the poll interval and a busy machine.
    assert 1.0 <= t2 - t1 <= 1.1 + 1.0
    assert 0.3 * 2 * 0.75 <= t3 - t2 <= 0.3 * 2 * 1.25 + 1.0
    *retries, event = [e.payload(DeliveryChanged) for e in events]
    assert [(r.status, r.attempts) for r in retries] == [("retrying", 1), ("retrying", 2)]
    assert "HTTP 429" in (retries[0].detail or "") and "HTTP 500" in (retries[1].detail or "")
    assert (event.status, event.attempts, event.channel, event.recipient) == (
        "sent",
        3,
        "slack",
        channel,
    )
    [row] = log["items"]
    assert (row["status"], row["attempts"]) == ("sent", 3)


async def test_webhooks_only_to_slack_hosts_and_permanent_errors_dead_letter(
    harness: NotifyHarness, broker: EmbeddedBroker
) -> None:
    if not harness.db_url.startswith("sqlite"):
        pytest.skip("database-agnostic; failure + DLQ storage is covered on both in SMTP tests")
    slack = SlackStandIn()
    account = new_account()
    hook = f"h{uuid.uuid4().hex[:6]}"
    async with serve_app(slack.app()) as slack_url:
        await harness.start(SLACK_API_BASE=slack_url, SLACK_BOT_TOKEN="xoxb-test")
        good = request(
            channel="slack",
            template_id="expansion-owner-slack",
            to=[Recipient(slack_channel=f"{slack_url}/webhook/T1/{hook}")],
        )
        evil = request(
            channel="slack",
            template_id="expansion-owner-slack",
            to=[Recipient(slack_channel="https://evil.example/webhook/T1/x")],
        )
        gone = f"#gone-{uuid.uuid4().hex[:6]}"
        slack.scripts[gone] = [(404, {})]
        missing = request(
            channel="slack", to=[Recipient(slack_channel=gone)], template_id="alert-owner-slack"
        )
        await publish(broker, account, good, evil, missing)
        events = await read_topic(
            broker.bootstrap_servers,
            topics.NOTIFY_DELIVERIES,
            match=lambda e: e.account_id == account,
            count=3,
            settle=0.3,
        )
        dead = await read_topic(
            broker.bootstrap_servers,
            topics.dlq(topics.NOTIFY_REQUESTS),
            match=lambda e: e.account_id == account,
            count=2,
            settle=0.3,
        )
    by_key = {
        e.payload(DeliveryChanged).idempotency_key: e.payload(DeliveryChanged) for e in events
    }
    assert by_key[good.idempotency_key].status == "sent"
    assert by_key[good.idempotency_key].recipient == "webhook"  # the URL is a secret
    assert by_key[evil.idempotency_key].status == "failed"
    assert "not a Slack host" in (by_key[evil.idempotency_key].detail or "")
    assert by_key[evil.idempotency_key].attempts == 1
    assert by_key[missing.idempotency_key].status == "failed"
    assert by_key[missing.idempotency_key].attempts == 1  # a 404 is not retried
    assert len(slack.to(f"webhook:{hook}")) == 1 and len(slack.to(gone)) == 1
    assert {e.data["idempotency_key"] for e in dead} == {
        evil.idempotency_key,
        missing.idempotency_key,
    }


async def test_the_configured_webhook_url_end_to_end(
    harness: NotifyHarness, broker: EmbeddedBroker
) -> None:
    """``SLACK_WEBHOOK_URL`` (no bot token): a request with no channel posts to it, once."""
    if not harness.db_url.startswith("sqlite"):
        pytest.skip("database-agnostic: the settings path, not the storage")
    slack = SlackStandIn()
    account, hook = new_account(), f"h{uuid.uuid4().hex[:8]}"
    async with serve_app(slack.app()) as slack_url:
        webhook = f"{slack_url}/webhook/T9/{hook}"
        base = await harness.start(SLACK_API_BASE=slack_url, SLACK_WEBHOOK_URL=webhook)
        req = request(
            channel="slack",
            template_id="alert-owner-slack",
            to=[],
            context={"account_name": "Acme", "alert_title": "Usage dropped", "reason": "r"},
        )
        await publish(broker, account, req, req)
        [event] = [
            e.payload(DeliveryChanged)
            for e in await read_topic(
                broker.bootstrap_servers,
                topics.NOTIFY_DELIVERIES,
                match=lambda e: e.account_id == account,
                count=1,
                settle=0.5,
            )
        ]
        async with http_client(base_url=base, headers=auth("read")) as client:
            [row] = (await client.get("/v1/deliveries", params={"account_id": account})).json()[
                "items"
            ]
    [(_, _, body, authz)] = slack.to(f"webhook:{hook}")
    assert authz is None  # a webhook carries no token
    assert body["text"] == ":rotating_light: Usage dropped on Acme: r"
    assert body["blocks"][0]["type"] == "header" and "channel" not in body
    assert (event.status, event.attempts) == ("sent", 1)
    assert row["status"] == "sent" and row["sent_at"]
    assert row["provider_response"] == '{"ok":true,"ts":"1.0"}'
    assert hook not in str(row) and hook not in str(event)
