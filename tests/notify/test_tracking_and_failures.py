"""Open and click tracking through signed links; SMTP retries, permanent failures, dev outbox."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import re
import time
from pathlib import Path

from shared import topics
from shared.broker import EmbeddedBroker
from shared.messages import DeliveryChanged, Recipient
from tests.notify.conftest import (
    NotifyHarness,
    SmtpServer,
    new_account,
    new_email,
    notify_settings,
    publish,
    request,
)
from tests.support import auth, http_client, read_topic, serve_app


async def events_of(broker: EmbeddedBroker, account: str, count: int) -> list[DeliveryChanged]:
    envs = await read_topic(
        broker.bootstrap_servers,
        topics.NOTIFY_DELIVERIES,
        match=lambda e: e.account_id == account,
        count=count,
        settle=0.3,
    )
    return [e.payload(DeliveryChanged) for e in envs]


def flip(token: str) -> str:
    """The same token with one payload character changed."""
    i = 3
    return token[:i] + ("B" if token[i] != "B" else "C") + token[i + 1 :]


async def test_open_and_click_through_signed_links_only(
    harness: NotifyHarness, smtp: SmtpServer, broker: EmbeddedBroker
) -> None:
    account, ada = new_account(), new_email()
    base = await harness.start()
    await publish(broker, account, request(to=[Recipient(email=ada)], template_id="welcome"))
    [received] = await smtp.inbox.wait_for(ada, 1)
    html = received.message.get_body(("html",)).get_content()
    pixel = re.search(r'<img src="http://127\.0\.0\.1:8004(/t/o/[^"]+)"', html)
    click = re.search(r'href="http://127\.0\.0\.1:8004(/t/c/[^"]+)"', html)
    assert pixel and click
    # Our own unsubscribe link stays direct; only outbound links go through the redirect.
    assert 'href="http://127.0.0.1:8004/v1/unsubscribe?token=' in html
    assert "uptake.dev/docs" not in html.split("<body")[1].split("Unsubscribe")[0].replace(
        click.group(0), ""
    )  # the only outbound link went through the redirect
    async with http_client(base_url=base) as client:
        for _ in range(2):  # a second open is not a second event
            r = await client.get(pixel.group(1))
            assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
        r = await client.get(click.group(1))
        assert r.status_code == 302
        assert r.headers["location"] == "https://uptake.dev/docs/getting-started"

        open_token = pixel.group(1).removeprefix("/t/o/")
        click_token = click.group(1).removeprefix("/t/c/")
        assert (await client.get(f"/t/o/{flip(open_token)}")).status_code == 404
        assert (await client.get(f"/t/c/{flip(click_token)}")).status_code == 404
        # A token of one kind is no good as another, and no URL can be appended.
        assert (await client.get(f"/t/c/{open_token}")).status_code == 404
        r = await client.get(f"/t/c/{click_token}?url=https://evil.example")
        assert r.status_code == 422 and "location" not in r.headers
        log = await client.get("/v1/deliveries", params={"recipient": ada}, headers=auth("read"))
        [row] = log.json()["items"]
        assert row["opened_at"] and row["clicked_at"]
    statuses = [e.status for e in await events_of(broker, account, 3)]
    assert statuses == ["sent", "opened", "clicked"]
    url = (await events_of(broker, account, 3))[2].url
    assert url == "https://uptake.dev/docs/getting-started"


async def test_smtp_4xx_is_retried_5xx_and_the_last_try_dead_lettered(
    harness: NotifyHarness, smtp: SmtpServer, broker: EmbeddedBroker
) -> None:
    account = new_account()
    ada, bob, cid = new_email("ada"), new_email("bob"), new_email("cid")
    smtp.inbox.replies = ["451 4.3.0 try again later"]
    await harness.start(NOTIFY_MAX_ATTEMPTS=3)
    await publish(broker, account, request(to=[Recipient(email=ada)]))
    await smtp.inbox.wait_for(ada, 1)
    smtp.inbox.replies = ["550 5.1.1 no such user"]
    bad = request(to=[Recipient(email=bob)])
    await publish(broker, account, bad)
    await events_of(broker, account, 3)
    smtp.inbox.replies = ["421 4.7.0 busy"] * 3  # every try of the next one
    busy = request(to=[Recipient(email=cid)])
    await publish(broker, account, busy)
    events = await events_of(broker, account, 6)
    assert [(e.recipient, e.status, e.attempts) for e in events] == [
        (ada, "retrying", 1),
        (ada, "sent", 2),
        (bob, "failed", 1),
        (cid, "retrying", 1),
        (cid, "retrying", 2),
        (cid, "failed", 3),
    ]
    assert "451" in (events[0].detail or "") and "next try at" in (events[0].detail or "")
    assert "550" in (events[2].detail or "") and "421" in (events[5].detail or "")
    dead = await read_topic(
        broker.bootstrap_servers,
        topics.dlq(topics.NOTIFY_REQUESTS),
        match=lambda e: e.account_id == account,
        count=2,
        settle=0.3,
    )
    assert [d.type for d in dead] == ["notify.requested"] * 2
    assert [d.data["idempotency_key"] for d in dead] == [bad.idempotency_key, busy.idempotency_key]
    assert smtp.inbox.to(cid) == [] and smtp.inbox.replies == []
    assert smtp.inbox.to(bob) == []


async def test_dev_outbox_without_smtp_or_slack(broker: EmbeddedBroker, tmp_path: Path) -> None:
    from services.notify.app import create_app

    settings = notify_settings(
        broker.bootstrap_servers, f"sqlite+aiosqlite:///{tmp_path / 'notify.db'}", tmp_path
    )
    account, ada = new_account(), new_email()
    async with serve_app(create_app(settings)) as base:
        await publish(
            broker,
            account,
            request(to=[Recipient(email=ada)], template_id="renewal-prep"),
            request(channel="slack", template_id="alert-owner-slack", to=[]),
        )
        outbox = tmp_path / "outbox"
        async with http_client(base_url=base, headers=auth("read")) as client:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                rows = (await client.get("/v1/deliveries", params={"account_id": account})).json()
                if [r["status"] for r in rows["items"]] == ["sent", "sent"]:
                    break
                await asyncio.sleep(0.05)
    emls = list(outbox.glob("*.eml"))
    slacks = list(outbox.glob("*.slack.json"))
    assert len(emls) == 1 and len(slacks) == 1
    eml = emls[0].read_bytes()
    parsed = email.message_from_bytes(eml, policy=email.policy.default)
    assert parsed["List-Unsubscribe"].startswith("<http://127.0.0.1:8004/v1/unsubscribe?token=")
    assert b"List-Unsubscribe-Post" not in eml  # RFC 8058 one-click is for https links only
    assert json.loads(slacks[0].read_text())["channel"] == "#cs-alerts"
    assert sorted(r["status"] for r in rows["items"]) == ["sent", "sent"]
