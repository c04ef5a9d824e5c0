"""Recipients judged one by one: a bad address fails alone; its co-recipients get their email."""

from __future__ import annotations

import asyncio
import uuid

from shared.broker import EmbeddedBroker
from shared.messages import Recipient
from tests.notify.conftest import (
    NotifyHarness,
    SmtpServer,
    new_account,
    new_email,
    publish,
    read_dead_letters,
    request,
)
from tests.notify.test_email_delivery import deliveries_for
from tests.notify.test_slack_delivery import SlackStandIn
from tests.support import auth, http_client, serve_app


async def test_one_bad_address_fails_alone_and_is_published(
    harness: NotifyHarness, smtp: SmtpServer, broker: EmbeddedBroker
) -> None:
    account, ada, bob, sentinel = new_account(), new_email("ada"), new_email("bob"), new_email()
    mixed = request(
        to=[
            Recipient(email=ada, contact_id="c-ada"),
            Recipient(email="n/a", contact_id="c-na"),
            Recipient(email=bob, contact_id="c-bob"),
            Recipient(email="eve@x.test\r\nBcc: all@x.test", contact_id="c-eve"),
        ],
        task_group_id="tg-mixed",
        step_key="welcome",
    )
    hopeless = request(to=[Recipient(email="none"), Recipient(email="@")])
    base = await harness.start()
    await publish(broker, account, mixed, hopeless)
    await smtp.inbox.wait_for(ada, 1)
    await smtp.inbox.wait_for(bob, 1)

    events = await deliveries_for(broker, account, 6, settle=0.5)
    mine = sorted(
        (e.recipient or "", e.status, e.detail or "")
        for e in events
        if e.idempotency_key == mixed.idempotency_key
    )
    assert [(r, s) for r, s, _ in mine] == sorted(
        [(ada, "sent"), ("n/a", "failed"), (bob, "sent"), ("eve@x.test Bcc: all@x.test", "failed")]
    )
    details = {r: d for r, _, d in mine}
    assert "to[1].email is not an email address" in details["n/a"]
    assert "to[3].email contains a line break" in details["eve@x.test Bcc: all@x.test"]
    failed = [
        e for e in events if e.status == "failed" and e.idempotency_key == mixed.idempotency_key
    ]
    assert all(e.task_group_id == "tg-mixed" and e.step_key == "welcome" for e in failed)
    assert sorted(
        e.recipient or "" for e in events if e.idempotency_key == hopeless.idempotency_key
    ) == ["@", "none"]

    async with http_client(base_url=base, headers=auth("read")) as client:
        rows = (await client.get("/v1/deliveries", params={"account_id": account})).json()["items"]
    by_contact = {r["contact_id"]: r for r in rows if r["contact_id"]}
    assert by_contact["c-na"]["status"] == "failed"
    assert by_contact["c-na"]["attempts"] == 0
    assert (
        by_contact["c-na"]["last_error"] == "invalid recipient: to[1].email is not an email address"
    )
    assert by_contact["c-ada"]["status"] == "sent" and by_contact["c-bob"]["status"] == "sent"

    # Only the request nobody could receive is dead-lettered, saying why.
    [dead] = await read_dead_letters(broker, account, 1)
    assert dead.envelope.data["idempotency_key"] == hopeless.idempotency_key
    assert dead.headers["x-error"].startswith("no valid recipient: ")
    assert "to[0].email is not an email address" in dead.headers["x-error"]

    # A replay adds nothing: no second failed event, no second dead letter, no second email.
    await publish(broker, account, mixed, hopeless, request(to=[Recipient(email=sentinel)]))
    await smtp.inbox.wait_for(sentinel, 1)
    await asyncio.sleep(0.3)
    assert len(await deliveries_for(broker, account, 7, settle=0.5)) == 7
    assert len(await read_dead_letters(broker, account, 1, settle=0.5)) == 1
    assert len(smtp.inbox.to(ada)) == 1 and len(smtp.inbox.to(bob)) == 1


async def test_dead_letters_carry_no_webhook_url(
    harness: NotifyHarness, broker: EmbeddedBroker
) -> None:
    """A webhook URL is a credential: the dead letter's copy of the request has it redacted."""
    slack = SlackStandIn()
    account, hook = new_account(), f"h{uuid.uuid4().hex}"
    slack.scripts[f"webhook:{hook}"] = [(404, {})]
    async with serve_app(slack.app()) as slack_url:
        secret = f"{slack_url}/webhook/T1/{hook}"
        gone = request(
            channel="slack",
            template_id="alert-owner-slack",
            to=[
                Recipient(slack_channel="https://evil.example/hook"),
                Recipient(slack_channel=secret),
            ],
        )
        invalid = request(
            channel="slack",
            template_id="alert-owner-slack",
            to=[Recipient(slack_channel=secret + "\n")],
        )
        await harness.start(SLACK_API_BASE=slack_url)
        await publish(broker, account, gone, invalid)
        dead = await read_dead_letters(broker, account, 3, settle=0.5)
    assert len(slack.to(f"webhook:{hook}")) == 1  # the 404 is permanent: one call
    # one per failed delivery (refused host, 404), one for the request nobody could take
    assert sorted(d.envelope.data["idempotency_key"] for d in dead) == sorted(
        [gone.idempotency_key, gone.idempotency_key, invalid.idempotency_key]
    )
    for d in dead:
        assert hook.encode() not in d.raw and b"evil.example" not in d.raw
        assert hook not in str(d.headers)
        assert [r["slack_channel"] for r in d.envelope.data["to"]] == ["webhook"]
    events = await deliveries_for(broker, account, 3)
    assert {e.recipient for e in events} == {"webhook"}
    assert all(hook not in (e.detail or "") for e in events)
