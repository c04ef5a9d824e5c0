"""Email delivery end to end: real broker, real SMTP server (aiosmtpd), SQLite and PostgreSQL."""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlsplit

from shared import topics
from shared.broker import EmbeddedBroker
from shared.messages import DeliveryChanged, Recipient
from tests.notify.conftest import (
    NotifyHarness,
    SmtpServer,
    new_account,
    new_email,
    publish,
    request,
)
from tests.support import auth, http_client, read_topic


async def deliveries_for(
    broker: EmbeddedBroker, account: str, count: int, **kw: float
) -> list[DeliveryChanged]:
    """The ``notify.deliveries.v1`` events of one account, in order."""
    envelopes = await read_topic(
        broker.bootstrap_servers,
        topics.NOTIFY_DELIVERIES,
        match=lambda e: e.account_id == account,
        count=count,
        **kw,
    )
    return [e.payload(DeliveryChanged) for e in envelopes]


async def test_one_email_per_request_across_duplicates_and_restart(
    harness: NotifyHarness, smtp: SmtpServer, broker: EmbeddedBroker
) -> None:
    account, ada, sentinel = new_account(), new_email("ada"), new_email("sentinel")
    req = request(
        key="tg-1:welcome",
        to=[Recipient(email=ada, name="Ada Lovelace", contact_id="c-1")],
        context={"account_name": "Acme <Corp>", "csm_name": "Grace Hopper"},
        from_name="Grace Hopper",
        task_group_id="tg-1",
        step_key="welcome",
    )
    await harness.start()
    await publish(broker, account, req, req)  # a duplicate in the same batch
    [first] = await smtp.inbox.wait_for(ada, 1)
    await harness.stop()

    await publish(broker, account, req)  # replayed while the service is down
    await harness.start()
    await publish(broker, account, req, request(to=[Recipient(email=sentinel)]))
    # The sentinel was published after every copy: once it is in, the copies were handled.
    await smtp.inbox.wait_for(sentinel, 1)
    assert len(smtp.inbox.to(ada)) == 1

    msg = first.message
    assert msg["From"] == "Grace Hopper <success@acme.test>"
    assert msg["To"] == "Ada Lovelace <" + ada + ">"
    assert msg["Subject"] == "Welcome to Acme <Corp>'s onboarding, Ada"
    assert msg["List-Unsubscribe-Post"] is None  # an http link (tests): no RFC 8058 one-click
    https_link, mailto = re.findall(r"<([^>]+)>", msg["List-Unsubscribe"])
    assert https_link.startswith("http://127.0.0.1:8004/v1/unsubscribe?token=")
    assert mailto.startswith("mailto:unsubscribe@acme.test?subject=")
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "Hi Ada," in text and "Acme <Corp>" in text
    assert "Acme &lt;Corp&gt;" in html and "Acme <Corp>" not in html  # autoescaped

    sent = await deliveries_for(broker, account, 2, settle=0.5)
    assert [(d.status, d.recipient, d.idempotency_key) for d in sent if d.recipient == ada] == [
        ("sent", ada, "tg-1:welcome")
    ]
    assert sent[0].task_group_id == "tg-1" and sent[0].step_key == "welcome"


async def test_one_click_unsubscribe_suppresses_and_publishes(
    harness: NotifyHarness, smtp: SmtpServer, broker: EmbeddedBroker
) -> None:
    account, ada = new_account(), new_email()
    base = await harness.start(PUBLIC_BASE_URL="https://notify.acme.test")
    await publish(broker, account, request(to=[Recipient(email=ada)]))
    [received] = await smtp.inbox.wait_for(ada, 1)
    assert received.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https_link = re.findall(r"<([^>]+)>", received.message["List-Unsubscribe"])[0]
    parts = urlsplit(https_link)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "notify.acme.test",
        "/v1/unsubscribe",
    )
    token = parse_qs(parts.query)["token"][0]

    async with http_client(base_url=base) as client:
        page = await client.get("/v1/unsubscribe", params={"token": token})
        assert page.status_code == 200 and "Unsubscribe" in page.text
        assert (
            await client.get(f"/v1/suppressions/{ada}", headers=auth("read"))
        ).status_code == 404

        tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        bad = await client.post(
            "/v1/unsubscribe", params={"token": tampered}, content="List-Unsubscribe=One-Click"
        )
        assert bad.status_code == 400
        assert (
            await client.get(f"/v1/suppressions/{ada}", headers=auth("read"))
        ).status_code == 404

        ok = await client.post(
            f"/v1/unsubscribe?token={token}",
            content="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert ok.status_code == 200
        again = await client.post(
            f"/v1/unsubscribe?token={token}", content="List-Unsubscribe=One-Click"
        )
        assert again.status_code == 200
        row = await client.get(f"/v1/suppressions/{ada}", headers=auth("read"))
        assert row.status_code == 200 and row.json()["reason"] == "unsubscribed"

        # A suppressed contact gets nothing more.
        later = request(to=[Recipient(email=ada)], template_id="tech-touch-day-3")
        await publish(broker, account, later)
        events = await deliveries_for(broker, account, 3, settle=0.3)
        statuses = [e.status for e in events]
        assert statuses == ["sent", "unsubscribed", "suppressed"]
        log = await client.get(
            "/v1/deliveries",
            params={"account_id": account, "status": "suppressed"},
            headers=auth("read"),
        )
        assert [d["idempotency_key"] for d in log.json()["items"]] == [later.idempotency_key]
    assert len(smtp.inbox.to(ada)) == 1


async def test_frequency_cap_defers_then_sends_when_window_opens(
    harness: NotifyHarness, smtp: SmtpServer, broker: EmbeddedBroker
) -> None:
    account, ada, bob = new_account(), new_email("ada"), new_email("bob")
    window = 2.0
    await harness.start(NOTIFY_FREQUENCY_CAP_WINDOW=window)
    first = request(to=[Recipient(email=ada)], template_id="welcome")
    second = request(to=[Recipient(email=ada)], template_id="onboarding-setup")
    manual = request(to=[Recipient(email=ada)], template_id="adoption-checkin", automated=False)
    other = request(to=[Recipient(email=bob)], template_id="onboarding-setup")
    await publish(broker, account, first)
    await smtp.inbox.wait_for(ada, 1)
    started = time.monotonic()
    await publish(broker, account, second, manual, other)
    # A manual (non-automated) email and another contact are not held back.
    await smtp.inbox.wait_for(bob, 1)
    assert len(await smtp.inbox.wait_for(ada, 2)) == 2
    deferred = await deliveries_for(broker, account, 4, timeout=5)
    assert [(d.status, d.idempotency_key) for d in deferred if d.status == "deferred"] == [
        ("deferred", second.idempotency_key)
    ]
    got = await smtp.inbox.wait_for(ada, 3, timeout=window + 10)
    assert len(got) == 3
    subjects = [m.message["Subject"] for m in got]
    assert subjects[2].endswith("let's finish your setup")
    assert got[2].at - got[0].at >= window - 0.2  # not before the window opened
    assert time.monotonic() - started < window + 8
