"""Every customer email greets the person it reaches: each built-in playbook email step,
built by playbooks for an account with several contacts and sent through notify to a real
SMTP server, greets the name in its ``To:`` header. A template that would name someone
else (a request-context person variable) is refused on save. Real broker, aiosmtpd."""

from __future__ import annotations

import uuid
from email.message import EmailMessage
from typing import Any

from services.playbooks.flows import recipients_json
from services.playbooks.library import builtin_templates as playbook_library
from services.playbooks.outbound import ContactFacts, CsmFacts, DueStep, build_request
from services.playbooks.planning import AccountFacts
from shared.broker import EmbeddedBroker
from shared.messages import NotifyRequested
from tests.notify.conftest import NotifyHarness, SmtpServer, new_account, new_email, publish
from tests.playbooks.conftest import until
from tests.support import auth, http_client

# A name some old sender put in the shared context: it must reach nobody.
STRANGER = "Mallory"


def _email_steps() -> list[tuple[str, DueStep]]:
    steps = []
    for template in playbook_library():
        for step in template.steps:
            if step.type != "email":
                continue
            due = DueStep(
                task_group_id=uuid.uuid4().hex,
                step_key=step.key,
                type="email",
                title=step.title,
                template_id=step.template_id or "",
                recipients=recipients_json(step),
                from_owner=step.from_owner,
                step_context={**step.context, "contact_name": STRANGER},
                group_context={
                    "alert": {"title": "Usage dropped", "reason": "reports -40%"},
                    "contact": {"name": f"{STRANGER} Smith", "email": "m@x.test"},
                },
                playbook_id=template.id,
                playbook_name=template.name,
            )
            steps.append((template.id, due))
    return steps


def _parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    return str(text.get_content()), str(html.get_content())


async def test_every_builtin_playbook_email_greets_the_person_in_its_to_header(
    harness: NotifyHarness, smtp: SmtpServer, broker: EmbeddedBroker
) -> None:
    await harness.start(NOTIFY_FREQUENCY_CAP=0, NOTIFY_ACCOUNT_CAP=0)
    account = new_account()
    contacts = [
        ContactFacts("u1", new_email("ada"), "Ada Lovelace", "admin"),
        ContactFacts("u2", new_email("grace"), "Grace Hopper", "owner", primary=True),
        ContactFacts("u3", new_email("linus"), "Linus Torvalds", "billing"),
    ]
    csm = CsmFacts("cam@cs.test", "Cam Csm", None)
    facts = AccountFacts(account, name="Acme")
    requests: list[NotifyRequested] = []
    for _, step in _email_steps():
        req = build_request(step, facts, contacts, csm, default_slack_channel=None)
        assert req is not None
        requests.append(req)
    assert {r.template_id for r in requests} >= {
        "welcome",
        "owner-handoff",
        "adoption-checkin",
        "reengagement",
        "tech-touch-day-3",
    }
    # Every audience of the library reaches two people here, with different names.
    assert all(len(r.to) >= 2 for r in requests)
    await publish(broker, account, *requests)
    expected = sum(len(r.to) for r in requests)
    addresses = {c.email for c in contacts if c.email}

    def received() -> list[Any]:
        return [m for m in smtp.inbox.messages if set(m.rcpt) & addresses]

    async def fetch() -> list[Any]:
        return received()

    got = await until(fetch, lambda ms: len(ms) >= expected, timeout=60)
    assert len(got) == expected
    seen: set[tuple[str, str]] = set()
    for m in got:
        [to] = m.message["To"].addresses
        assert m.rcpt == [to.addr_spec]
        first = to.display_name.split()[0]
        text, html = _parts(m.message)
        assert f"Hi {first}," in text, (to, text[:200])
        assert f"Hi {first}," in html
        everything = f"{m.message['Subject']}\n{text}\n{html}"
        others = {c.name.split()[0] for c in contacts if c.name and c.email != to.addr_spec}
        assert not any(f"Hi {o}" in everything for o in others | {STRANGER})
        assert STRANGER not in everything
        seen.add((str(m.message["Message-ID"]), to.addr_spec))
    assert len(seen) == expected  # one copy per (email, person), none twice


async def test_a_template_naming_a_contact_who_is_not_the_recipient_is_a_422(
    harness: NotifyHarness,
) -> None:
    base = await harness.start()
    bad: list[tuple[dict[str, Any], str, str]] = [
        ({"subject": "Hi", "html": "<p>Hi {{ contact_name }},</p>"}, "html", "contact_name"),
        ({"subject": "For {{ contact.name }}", "text": "Hello"}, "subject", "contact"),
        (
            {"subject": "Hi", "text": "{% for c in contacts %}{{ c.name }}{% endfor %}"},
            "text",
            "contacts",
        ),
    ]
    async with http_client(base_url=base, headers=auth("admin")) as client:
        for parts, field, name in bad:
            body = {"id": f"t-{uuid.uuid4().hex[:6]}", "name": "T", "channel": "email", **parts}
            r = await client.post("/v1/templates", json=body)
            assert r.status_code == 422, r.text
            [problem] = r.json()["detail"]
            assert problem["loc"] == ["body", field]
            assert f"'{name}'" in problem["msg"] and "recipient.first_name" in problem["msg"]
        # Overriding a built-in is checked the same way; a Slack block too.
        r = await client.put(
            "/v1/templates/welcome",
            json={"name": "W", "channel": "email", "subject": "Hi {{ first_name }}", "text": "x"},
        )
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "subject"]
        slack = {
            "id": f"s-{uuid.uuid4().hex[:6]}",
            "name": "S",
            "channel": "slack",
            "text": "ok",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": "{{ contact_name }}"}}
            ],
        }
        r = await client.post("/v1/templates", json=slack)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "blocks"]
        assert (await client.get("/v1/templates/welcome")).json()["builtin"] is True
        good = {
            "id": f"g-{uuid.uuid4().hex[:6]}",
            "name": "G",
            "channel": "email",
            "subject": "For {{ recipient.first_name or 'you' }}",
            "text": "Hi {{ recipient.name }} ({{ recipient.role }}), {{ csm_name }} here.",
        }
        r = await client.post("/v1/templates", json=good)
        assert r.status_code == 201, r.text
        preview = await client.post(f"/v1/templates/{good['id']}/preview", json={"context": {}})
        assert preview.json()["text"] == "Hi Ada Lovelace (admin), Grace Hopper here."


async def test_odd_templates_and_preview_recipients_are_a_422_not_a_500(
    harness: NotifyHarness,
) -> None:
    base = await harness.start()
    nested = "{% if x %}" * 400 + "y" + "{% endif %}" * 400  # deeper than Python recurses
    async with http_client(base_url=base, headers=auth("admin")) as client:
        body = {"id": f"n-{uuid.uuid4().hex[:6]}", "name": "N", "channel": "email"}
        r = await client.post("/v1/templates", json={**body, "subject": "s", "text": nested})
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["body", "text"]
        for bad in ({"name": ["Ada"]}, {"email": {"a": 1}}, {"role": True}):
            r = await client.post(
                "/v1/templates/welcome/preview", json={"context": {"recipient": bad}}
            )
            assert r.status_code == 422, r.text
            [problem] = r.json()["detail"]
            assert f"recipient.{next(iter(bad))}" in problem["msg"]
        r = await client.post(
            "/v1/templates/welcome/preview", json={"context": {"recipient": {"name": 7}}}
        )
        assert r.status_code == 200 and r.json()["subject"].endswith(", 7")
