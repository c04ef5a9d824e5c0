"""Who an email step reaches (its audience: roles, primary with the most-recent fallback,
all) and the review window of alert-started customer emails: pending and visible, skipped
by the CSM, cancelled by a resolved alert, sent after the window while the alert is open.
Real broker; SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from services.playbooks.repository import WAITING_FOR_RECIPIENT
from services.playbooks.scheduler import ALERT_GONE
from shared import topics
from shared.messages import ContactUpserted
from tests.playbooks.conftest import (
    Playbooks,
    new_account,
    new_csm,
    notify_requests,
    until,
)


async def _identify(
    playbooks: Playbooks, account: str, user: str, at: datetime, **fields: Any
) -> None:
    """A ``contact.upserted`` that happened at ``at`` (the contact's last-seen time)."""
    msg = ContactUpserted(message_id=uuid.uuid4().hex, user_id=user, **fields)
    await playbooks.publish(topics.ACCOUNTS, "contact.upserted", account, msg, occurred_at=at)


def _playbook(pid: str) -> dict[str, Any]:
    def email(key: str, **extra: Any) -> dict[str, Any]:
        return {"key": key, "type": "email", "title": key, "template_id": "reengagement", **extra}

    return {
        "id": pid,
        "name": "Audiences",
        "phase": "adoption",
        "trigger": {"kind": "manual"},
        "steps": [
            email("billing", audience={"roles": ["Billing"]}),
            email("primary"),  # no audience: primary
            email("everyone", audience="all"),
        ],
    }


async def _start(playbooks: Playbooks, account: str, pid: str) -> str:
    r = await playbooks.client.post(
        "/v1/task-groups", json={"account_id": account, "playbook_id": pid}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["task_group"]["id"])


async def test_an_audience_by_roles_and_primary_falling_back_to_the_three_most_recent(
    playbooks: Playbooks,
) -> None:
    account, pid = new_account(), f"audiences-{uuid.uuid4().hex[:6]}"
    r = await playbooks.client.post("/v1/playbooks", json=_playbook(pid))
    assert r.status_code == 201, r.text
    now = playbooks.clock.now
    await playbooks.account(account, name="Audience Co", stage="active")
    # Seen 5, 1, 2, 3 and 4 hours ago; u6 most recently, but without an email.
    seen = {"u1": 5, "u2": 1, "u3": 2, "u4": 3, "u5": 4}
    for user, hours in seen.items():
        role = "billing" if user == "u1" else "user"
        await _identify(
            playbooks,
            account,
            user,
            now - timedelta(hours=hours),
            email=f"{user}@{account}.test",
            name=f"Name {user.upper()}",
            role=role,
        )
    await _identify(playbooks, account, "u6", now, name="No Mail")
    await playbooks.wait_contacts(account, 6)

    first = await _start(playbooks, account, pid)
    await playbooks.scheduler.run_once()
    sent = {r.step_key: r for r in await notify_requests(playbooks, account, 3, settle=0.5)}
    assert [(t.email, t.name, t.role) for t in sent["billing"].to] == [
        (f"u1@{account}.test", "Name U1", "billing")
    ]
    # Nobody is primary (no trait, no admin/owner role): the three seen last, with an email.
    assert [t.contact_id for t in sent["primary"].to] == ["u2", "u3", "u4"]
    assert [t.contact_id for t in sent["everyone"].to] == ["u1", "u2", "u3", "u4", "u5"]
    assert all(r.task_group_id == first for r in sent.values())

    # u5 says it is a primary contact; a late, older identify saying otherwise changes nothing.
    await _identify(playbooks, account, "u5", now, traits={"primary": True})
    old = now - timedelta(days=1)
    await _identify(playbooks, account, "u5", old, traits={"primary": False}, role="admin")
    await _identify(playbooks, account, "u7", now, name="Marker")
    contacts = {c["user_id"]: c for c in await playbooks.wait_contacts(account, 7)}
    assert contacts["u5"]["primary"] is True and contacts["u5"]["role"] == "user"
    assert datetime.fromisoformat(contacts["u5"]["last_seen_at"]) == now
    second = await _start(playbooks, account, pid)
    await playbooks.scheduler.run_once()
    later = [
        r
        for r in await notify_requests(playbooks, account, 6, settle=0.5)
        if r.task_group_id == second
    ]
    [primary] = [r for r in later if r.step_key == "primary"]
    assert [t.contact_id for t in primary.to] == ["u5"]


async def test_a_bad_audience_or_review_window_is_a_422_naming_the_field(
    playbooks: Playbooks,
) -> None:
    def with_step(**step: Any) -> dict[str, Any]:
        body = _playbook(f"bad-{uuid.uuid4().hex[:6]}")
        body["steps"] = [{"key": "s", "title": "S", **step}]
        return body

    email = {"type": "email", "template_id": "welcome"}
    cases: list[tuple[dict[str, Any], list[Any]]] = [
        (with_step(**email, audience="everyone"), ["body", "steps", 0, "audience", "kind"]),
        (with_step(**email, audience={"roles": []}), ["body", "steps", 0, "audience"]),
        (
            with_step(**email, audience={"kind": "all", "roles": ["x"]}),
            ["body", "steps", 0, "audience"],
        ),
        (
            with_step(type="slack", template_id="alert-owner-slack", audience="all"),
            ["body", "steps", 0, "audience"],
        ),
        (
            with_step(**email, to={"kind": "contacts", "roles": ["admin"]}, audience="all"),
            ["body", "steps", 0, "to", "roles"],
        ),
        (with_step(delay_minutes=5), ["body", "steps", 0, "delay_minutes"]),
        (with_step(**email, delay_minutes=-1), ["body", "steps", 0, "delay_minutes"]),
    ]
    for body, loc in cases:
        r = await playbooks.client.post("/v1/playbooks", json=body)
        assert r.status_code == 422, (body, r.text)
        assert [d["loc"] for d in r.json()["detail"]] == [loc], r.text
    yaml_body = (
        "id: yaml-audience\nname: Y\nphase: risk\ntrigger: {kind: manual}\n"
        "steps:\n  - {key: s, type: email, title: S, template_id: welcome,\n"
        "     audience: {roles: [admin]}}\n"
    )
    r = await playbooks.client.post(
        "/v1/playbooks", content=yaml_body, headers={"content-type": "application/yaml"}
    )
    assert r.status_code == 201, r.text
    got = await playbooks.client.get("/v1/playbooks/yaml-audience", params={"format": "yaml"})
    assert "audience:" in got.text and "roles:" in got.text


async def _group(playbooks: Playbooks, account: str, playbook_id: str) -> dict[str, Any]:
    groups = await playbooks.wait_groups(account, 1, playbook_id=playbook_id)
    detail: dict[str, Any] = await playbooks.get(f"/v1/task-groups/{groups[0]['id']}")
    return detail


def _step(group: dict[str, Any], key: str) -> dict[str, Any]:
    [task] = [t for t in group["tasks"] if t["step_key"] == key]
    return dict(task)


async def test_alert_started_customer_emails_wait_for_the_review_window_and_an_open_alert(
    playbooks: Playbooks,
) -> None:
    skipped, resolved, handoff, confirmed = (new_account() for _ in range(4))
    owner = new_csm("rory")
    csm = {"email": owner, "name": "Rory", "slack_id": "U-RORY"}
    assert (await playbooks.client.post("/v1/csms", json=csm)).status_code == 201
    for account in (skipped, resolved, handoff, confirmed):
        await playbooks.account(account, name="Review Co", stage="active", owner=owner)
        await playbooks.contact(account, "u1", email=f"pat@{account}.test", name="Pat Doe")
        await playbooks.wait_contacts(account, 1)
    await playbooks.alert(skipped, rule_type="score_drop")
    resolved_alert = await playbooks.alert(resolved, rule_type="inactivity")
    handoff_alert = await playbooks.alert(handoff, rule_type="owner_changed")
    await playbooks.alert(confirmed, rule_type="score_drop")
    started = playbooks.clock.now

    # The pending send is visible in its group, due at the end of the window.
    group = await _group(playbooks, skipped, "adoption-risk")
    checkin = _step(group, "checkin-email")
    window_end = datetime.fromisoformat(checkin["send_after"])
    assert window_end == started + timedelta(minutes=15)
    assert checkin["status"] == "open" and checkin["pending_send"]
    assert checkin["review_until"] == checkin["send_after"]
    # Inside the window: the owner's Slack goes, no customer email.
    await playbooks.scheduler.run_once()
    [slack] = await notify_requests(playbooks, skipped, 1, settle=0.5)
    assert slack.template_id == "alert-owner-slack"

    # The CSM cancels one...
    r = await playbooks.client.post(f"/v1/tasks/{checkin['id']}/skip", json={"note": "a blip"})
    assert r.status_code == 200 and r.json()["status"] == "skipped", r.text
    assert not r.json()["pending_send"]
    # ...health resolves two alerts (one play exits on resolve, the handoff does not).
    await playbooks.alert(
        resolved, type="alert.resolved", alert_id=resolved_alert, status="resolved"
    )
    await playbooks.alert(handoff, type="alert.resolved", alert_id=handoff_alert, status="resolved")
    exited = await until(
        lambda: playbooks.groups(resolved), lambda gs: gs and gs[0]["status"] == "exited"
    )
    assert exited[0]["closed_reason"] == "alert resolved"
    # (a marker: the handoff account's resolution has been consumed once its group shows)
    await playbooks.alert(handoff, rule_type="expansion")
    await playbooks.wait_groups(handoff, 2)

    playbooks.clock.advance(minutes=15)
    await playbooks.scheduler.run_once()
    [sent] = [
        r
        for r in await notify_requests(playbooks, confirmed, 2, settle=0.5)
        if r.channel == "email"
    ]
    group = await _group(playbooks, confirmed, "adoption-risk")
    assert sent.idempotency_key == f"{group['id']}:checkin-email"
    assert [t.email for t in sent.to] == [f"pat@{confirmed}.test"]
    assert _step(group, "checkin-email")["status"] == "done"

    assert [r.template_id for r in await notify_requests(playbooks, skipped, 1, settle=0.5)] == [
        "alert-owner-slack"
    ]
    assert await notify_requests(playbooks, resolved, 0, settle=1.0) == []
    resolved_group = await _group(playbooks, resolved, "inactivity-reengagement")
    assert _step(resolved_group, "reengagement-email")["status"] == "cancelled"
    # The handoff's group stays open (no alert_resolved exit), but its email is not sent.
    handoff_sent = await notify_requests(playbooks, handoff, 1, settle=1.0)
    assert [r.template_id for r in handoff_sent] == ["expansion-owner-slack"]
    handoff_group = await _group(playbooks, handoff, "owner-handoff")
    intro = _step(handoff_group, "intro-email")
    assert (intro["status"], intro["detail"]) == ("cancelled", ALERT_GONE)
    assert handoff_group["status"] == "open"  # its tasks for people go on


async def test_the_review_window_is_a_setting_and_a_step_may_set_its_own(
    playbooks: Playbooks,
) -> None:
    """A step's own ``delay_minutes`` applies whatever starts the group."""
    account, pid = new_account(), f"own-window-{uuid.uuid4().hex[:6]}"
    body = _playbook(pid)
    body["steps"] = [
        {
            "key": "later",
            "type": "email",
            "title": "L",
            "template_id": "welcome",
            "delay_minutes": 30,
        }
    ]
    assert (await playbooks.client.post("/v1/playbooks", json=body)).status_code == 201
    await playbooks.account(account, name="Own Co", stage="active")
    await playbooks.contact(account, "u1", email=f"a@{account}.test", role="admin")
    await playbooks.wait_contacts(account, 1)
    gid = await _start(playbooks, account, pid)
    detail = await playbooks.get(f"/v1/task-groups/{gid}")
    step = _step(detail, "later")
    assert datetime.fromisoformat(step["send_after"]) - datetime.fromisoformat(
        detail["started_at"]
    ) == timedelta(minutes=30)
    await playbooks.scheduler.run_once(playbooks.clock.now + timedelta(minutes=29))
    assert await notify_requests(playbooks, account, 0, settle=0.5) == []
    await playbooks.scheduler.run_once(playbooks.clock.now + timedelta(minutes=30))
    [sent] = await notify_requests(playbooks, account, 1, settle=0.5)
    assert sent.step_key == "later"


async def test_a_welcome_to_admins_waits_for_one_and_is_skipped_after_three_days(
    playbooks: Playbooks,
) -> None:
    """The kickoff welcome goes to admin/owner contacts only: a member's email is not
    enough; an admin arriving later gets it, an account that never has one skips it."""
    later, never = new_account(), new_account()
    for account in (later, never):
        await playbooks.account(account, name="Wait Co", stage="onboarding", mrr=8000)
        await playbooks.contact(account, "u1", email=f"member@{account}.test", role="member")
        await playbooks.wait_contacts(account, 1)
        await playbooks.wait_groups(account, 3)
    await playbooks.scheduler.run_once()
    for account in (later, never):
        welcome = _step(await _group(playbooks, account, "onboarding-1-kickoff"), "welcome-email")
        assert (welcome["status"], welcome["detail"]) == ("open", WAITING_FOR_RECIPIENT)
    assert [
        r
        for r in await notify_requests(playbooks, later, 0, settle=0.5)
        if r.template_id == "welcome"
    ] == []

    await playbooks.contact(later, "u2", email=f"boss@{later}.test", name="Bo", role="Admin")
    await playbooks.wait_contacts(later, 2)
    await until(  # the admin's arrival makes the step due again at once
        lambda: _group(playbooks, later, "onboarding-1-kickoff"),
        lambda g: _step(g, "welcome-email")["detail"] is None,
    )
    await playbooks.scheduler.run_once()
    [sent] = [
        r
        for r in await notify_requests(playbooks, later, 1, settle=0.5)
        if r.template_id == "welcome"
    ]
    assert [t.email for t in sent.to] == [f"boss@{later}.test"]

    playbooks.clock.advance(days=3)
    await playbooks.scheduler.run_once()
    welcome = _step(await _group(playbooks, never, "onboarding-1-kickoff"), "welcome-email")
    assert welcome["status"] == "skipped" and "no recipient" in welcome["detail"]
    assert [
        r
        for r in await notify_requests(playbooks, never, 0, settle=0.5)
        if r.template_id == "welcome"
    ] == []


async def test_a_snoozed_or_acknowledged_alert_still_gets_its_reviewed_email(
    playbooks: Playbooks,
) -> None:
    """Only a resolved alert cancels a reviewed send: snoozed and acknowledged are open."""
    snoozed, acknowledged = new_account(), new_account()
    for account in (snoozed, acknowledged):
        await playbooks.account(account, name="Snooze Co", stage="active")
        await playbooks.contact(account, "u1", email=f"pat@{account}.test", role="admin")
        await playbooks.wait_contacts(account, 1)
    for account, status in ((snoozed, "snoozed"), (acknowledged, "acknowledged")):
        alert_id = await playbooks.alert(account, rule_type="score_drop")
        await _group(playbooks, account, "adoption-risk")
        await playbooks.alert(account, type="alert.updated", alert_id=alert_id, status=status)
    # (a marker: both updates were consumed once the marker's group shows)
    for account in (snoozed, acknowledged):
        await playbooks.alert(account, rule_type="expansion")
        await playbooks.wait_groups(account, 2)
    playbooks.clock.advance(minutes=15)
    await playbooks.scheduler.run_once()
    for account in (snoozed, acknowledged):
        emails = [
            r
            # the one reviewed email, then half a second for any extra
            for r in await notify_requests(playbooks, account, 1, settle=0.5)
            if r.channel == "email"
        ]
        assert [r.template_id for r in emails] == ["adoption-checkin"], account
        group = await _group(playbooks, account, "adoption-risk")
        assert _step(group, "checkin-email")["status"] == "done"
