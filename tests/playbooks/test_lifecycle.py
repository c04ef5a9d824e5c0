"""Lifecycle in (accounts.v1, usage.events.v1), steps out (notify.requests.v1): onboarding
plays, tech-touch emails that stop at the milestone, owner handoff, delivery outcomes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared import topics
from shared.broker import EmbeddedBroker
from shared.messages import DeliveryChanged, OwnerChanged, UsageEvent
from tests.playbooks.conftest import (
    Playbooks,
    new_account,
    new_csm,
    notify_requests,
    running,
    until,
)
from tests.support import read_topic


async def test_new_onboarding_account_starts_onboarding_plays_and_welcome_goes_at_once(
    playbooks: Playbooks,
) -> None:
    account, owner = new_account(), new_csm("dee")
    await playbooks.client.post(
        "/v1/csms", json={"email": owner, "name": "Dee Diaz", "slack_id": "U123"}
    )
    await playbooks.account(account, name="Big Co", owner=owner, stage="onboarding", mrr=8000)
    await playbooks.contact(account, "u1", email="pat@big.test", name="Pat", role="admin")
    [contact] = await playbooks.wait_contacts(account, 1)
    assert contact.pop("last_seen_at") is not None
    assert contact == {
        "user_id": "u1",
        "email": "pat@big.test",
        "name": "Pat",
        "role": "admin",
        "primary": False,
    }
    groups = await playbooks.wait_groups(account, 3)
    assert sorted(g["playbook_id"] for g in groups) == [
        "onboarding-1-kickoff",
        "onboarding-2-setup",
        "onboarding-3-first-cycle",
    ]
    assert {g["assignee"] for g in groups} == {owner}
    # The same stage again (a replayed or repeated group call) starts nothing new.
    await playbooks.account(account, stage="onboarding", mrr=8000)
    await playbooks.alert(account, rule_type="expansion")  # marker: the above was consumed
    await playbooks.wait_groups(account, 4)
    assert len(await playbooks.groups(account)) == 4

    await playbooks.scheduler.run_once()
    sent = [r for r in await notify_requests(playbooks, account, 2) if r.channel == "email"]
    [welcome] = sent
    kickoff = next(g for g in groups if g["playbook_id"] == "onboarding-1-kickoff")
    assert welcome.template_id == "welcome"
    assert welcome.idempotency_key == f"{kickoff['id']}:welcome-email"
    assert [(t.email, t.name, t.role) for t in welcome.to] == [("pat@big.test", "Pat", "admin")]
    assert welcome.from_name == "Dee Diaz" and welcome.reply_to == owner
    assert welcome.context["account_name"] == "Big Co"
    assert "contact_name" not in welcome.context  # notify greets each recipient itself
    assert welcome.context["csm"]["email"] == owner

    # Churning exits the onboarding plays (their stage_changed exit) and cancels the rest.
    await playbooks.account(account, stage="churned")
    onboarding = await until(
        lambda: playbooks.groups(account),
        lambda gs: all(g["status"] == "exited" for g in gs if g["phase"] == "onboarding"),
    )
    assert {g["closed_reason"] for g in onboarding if g["phase"] == "onboarding"} == {
        "stage changed to churned"
    }


async def test_tech_touch_emails_follow_days_and_stop_after_milestone(
    playbooks: Playbooks,
) -> None:
    account = new_account()
    await playbooks.account(account, name="Small Co", stage="onboarding")  # no mrr: tech touch
    await playbooks.contact(account, "u1", email="sam@small.test", name="Sam", role="admin")
    await playbooks.wait_contacts(account, 1)
    [group] = await playbooks.wait_groups(account, 1)
    assert group["playbook_id"] == "tech-touch-onboarding"
    assert group["assignee"] is None  # no owner: the unassigned queue

    start = playbooks.clock.now
    await playbooks.scheduler.run_once(start)
    await playbooks.scheduler.run_once(start)  # a second pass sends nothing twice
    playbooks.clock.advance(days=3, minutes=1)
    await playbooks.scheduler.run_once()
    sent = await notify_requests(playbooks, account, 2)
    assert [r.template_id for r in sent] == ["welcome", "tech-touch-day-3"]
    assert sent[0].to[0].email == "sam@small.test"

    milestone = UsageEvent(
        message_id=uuid.uuid4().hex, event="Milestone Reached", timestamp=datetime.now(UTC)
    )
    await playbooks.publish(topics.USAGE_EVENTS, "usage.track", account, milestone)
    [exited] = await until(lambda: playbooks.groups(account), lambda g: g[0]["status"] == "exited")
    assert exited["closed_reason"] == "event seen: Milestone Reached"
    playbooks.clock.advance(days=20)
    await playbooks.scheduler.run_once()
    assert [r.template_id for r in await notify_requests(playbooks, account, 2, settle=1.0)] == [
        "welcome",
        "tech-touch-day-3",
    ]
    detail = await playbooks.get(f"/v1/task-groups/{group['id']}")
    assert [t["status"] for t in detail["tasks"]] == ["done", "done", "cancelled", "cancelled"]


async def test_owner_change_starts_handoff_and_delivery_outcome_shows_on_step(
    playbooks: Playbooks,
) -> None:
    account, old, new = new_account(), new_csm("old"), new_csm("new")
    await playbooks.account(account, name="Mid Co", owner=old, stage="active")
    await playbooks.contact(account, "u1", email="kim@mid.test", name="Kim")
    await playbooks.wait_contacts(account, 1)
    await playbooks.alert(account, rule_type="expansion", owner=old)
    [expansion] = await playbooks.wait_groups(account, 1)
    assert expansion["assignee"] == old
    changed = OwnerChanged(
        message_id=uuid.uuid4().hex, previous_owner=old, owner=new, changed_at=datetime.now(UTC)
    )
    await playbooks.publish(topics.ACCOUNTS, "account.owner_changed", account, changed)
    groups = await playbooks.wait_groups(account, 2)
    group = next(g for g in groups if g["playbook_id"] == "owner-handoff")
    assert group["assignee"] == new
    # The new owner took over the open work of the account.
    moved = await playbooks.get(f"/v1/task-groups/{expansion['id']}")
    assert moved["assignee"] == new
    assert {t["assignee"] for t in moved["tasks"]} == {new}
    assert group["context"] == {"previous_owner": old, "new_owner": new}
    new_csm_row = await playbooks.get(f"/v1/csms/{new}")
    assert new_csm_row["auto_added"] is True

    await playbooks.scheduler.run_once()
    # Only the intro email: the expansion Slack step waits, nobody has a Slack id here.
    [intro] = await notify_requests(playbooks, account, 1)
    assert intro.template_id == "owner-handoff" and intro.from_name == new_csm_row["name"]
    for status in ("sent", "opened", "sent"):  # a late "sent" does not hide "opened"
        outcome = DeliveryChanged(
            idempotency_key=intro.idempotency_key, status=status, channel="email", attempts=1
        )
        await playbooks.publish(topics.NOTIFY_DELIVERIES, "notify.delivery", account, outcome)
    tasks = await until(
        lambda: playbooks.get("/v1/tasks", task_group_id=group["id"], type="email"),
        lambda page: page["items"][0]["delivery"]["status"] == "opened",
    )
    [step] = tasks["items"]
    assert step["status"] == "done" and step["delivery"]["attempts"] == 1


async def test_running_scheduler_sends_risk_checkins_after_the_review_window(
    live_playbooks: Playbooks,
) -> None:
    service = live_playbooks
    account, owner = new_account(), new_csm("eve")
    r = await service.client.post(
        "/v1/csms", json={"email": owner, "name": "Eve", "slack_id": "U-EVE"}
    )
    assert r.status_code == 201
    await service.account(account, name="Quiet Co", owner=owner, stage="active")
    await service.contact(account, "u1", email="lou@quiet.test", name="Lou")
    await service.wait_contacts(account, 1)
    await service.alert(account, rule_type="band_drop", severity=4)
    await service.alert(account, rule_type="inactivity")
    # The owner hears at once; the customer emails wait for the 15-minute review window.
    [slack] = await notify_requests(service, account, 1, settle=0.6)
    assert slack.template_id == "alert-owner-slack"
    await service.wait_groups(account, 2)
    service.clock.advance(minutes=15)
    sent = await notify_requests(service, account, 3)
    by_template = {r.template_id: r for r in sent}
    assert set(by_template) == {"alert-owner-slack", "adoption-checkin", "reengagement"}
    assert by_template["alert-owner-slack"].to[0].slack_channel == "U-EVE"
    slack_context = by_template["alert-owner-slack"].context
    assert slack_context["alert"]["severity"] == 4
    # The flat names notify's built-in templates use.
    assert slack_context["alert_title"] == "Score dropped"
    assert slack_context["reason"] == "score -20 in 7 days"
    assert slack_context["playbook_name"] == "Adoption risk" and slack_context["csm_name"] == "Eve"
    for template in ("adoption-checkin", "reengagement"):
        request = by_template[template]
        assert [t.email for t in request.to] == ["lou@quiet.test"]
        assert request.from_name == "Eve"


async def test_tech_touch_days_7_and_14_are_sent_on_their_day_unless_the_milestone_came(
    playbooks: Playbooks,
) -> None:
    through, stopped = new_account(), new_account()
    for account in (through, stopped):
        await playbooks.account(account, name="Tiny Co", stage="onboarding")
        await playbooks.contact(account, "u1", email=f"u1@{account}.test", role="owner")
        await playbooks.wait_contacts(account, 1)
        await playbooks.wait_groups(account, 1)
    start = playbooks.clock.now

    async def pass_on(day: float) -> list[str]:
        await playbooks.scheduler.run_once(start + timedelta(days=day))
        return [r.template_id for r in await notify_requests(playbooks, through, 1, settle=0.5)]

    assert await pass_on(6.9) == ["welcome", "tech-touch-day-3"]  # day 7 not yet due
    assert await pass_on(7) == ["welcome", "tech-touch-day-3", "tech-touch-day-7"]
    milestone = UsageEvent(
        message_id=uuid.uuid4().hex, event="Onboarding Completed", timestamp=datetime.now(UTC)
    )
    await playbooks.publish(topics.USAGE_EVENTS, "usage.track", stopped, milestone)
    await until(lambda: playbooks.groups(stopped), lambda g: g[0]["status"] == "exited")
    assert await pass_on(14) == [
        "welcome",
        "tech-touch-day-3",
        "tech-touch-day-7",
        "tech-touch-day-14",
    ]
    [done] = await playbooks.groups(through)
    assert (done["status"], done["closed_reason"]) == ("completed", "all steps finished")
    sent = [r.template_id for r in await notify_requests(playbooks, stopped, 3, settle=0.5)]
    assert sent == ["welcome", "tech-touch-day-3", "tech-touch-day-7"]  # no day 14


@pytest.fixture
async def waking_playbooks(
    broker: EmbeddedBroker, database_url: Callable[[str], Awaitable[str]], tmp_path: Path
) -> AsyncIterator[Playbooks]:
    """The scheduler running with a tick far longer than any wait below: what is sent in
    time was sent because stored groups (or contacts) woke it."""
    async with running(
        broker,
        await database_url("playbooks"),
        tmp_path,
        PLAYBOOKS_SCHEDULER_ENABLED=True,
        PLAYBOOKS_SCHEDULER_INTERVAL=120,
        PLAYBOOKS_REVIEW_MINUTES=0,  # day-0 check-ins due at once: only a wake sends them
    ) as service:
        yield service


async def test_stored_groups_wake_the_scheduler_and_contacts_release_waiting_emails(
    waking_playbooks: Playbooks,
) -> None:
    service = waking_playbooks
    risky, fresh = new_account(), new_account()
    await service.account(risky, name="Risky Co", stage="active")
    await service.contact(risky, "u1", email="rae@risky.test")
    await service.wait_contacts(risky, 1)
    await service.alert(risky, rule_type="score_drop")
    [checkin] = await read_topic(
        service.bootstrap,
        topics.NOTIFY_REQUESTS,
        match=lambda e: e.account_id == risky,
        count=1,
        timeout=5,
    )
    assert checkin.data["template_id"] == "adoption-checkin"

    # No contact yet: the welcome waits for a recipient...
    await service.account(fresh, name="Fresh Co", stage="onboarding")
    [group] = await service.wait_groups(fresh, 1)
    waiting = await until(
        lambda: service.get("/v1/tasks", task_group_id=group["id"], type="email"),
        lambda p: any(t["detail"] == "waiting for a recipient" for t in p["items"]),
    )
    assert waiting["items"][0]["step_key"] == "day-0"
    # ...and goes as soon as the account has one, not ten minutes later.
    await service.contact(fresh, "u1", email="fay@fresh.test", role="admin")
    [welcome] = await notify_requests(service, fresh, 1, settle=0.5)
    assert welcome.template_id == "welcome" and welcome.to[0].email == "fay@fresh.test"
    sent = await until(
        lambda: service.get("/v1/tasks", task_group_id=group["id"], type="email"),
        lambda p: p["items"][0]["status"] == "done",
    )
    assert sent["items"][0]["detail"] is None
