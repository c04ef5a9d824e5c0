"""A churned account's task groups are cancelled and nothing more is sent to it: told by
accounts.v1 (trait ``status: churned``) or by health resolving its alerts with the
resolution ``churned``. Real broker; SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from shared import topics
from shared.envelope import Envelope
from tests.playbooks.conftest import Playbooks, new_account, new_csm, until
from tests.support import read_topic


async def _sent_to(playbooks: Playbooks, account: str) -> list[Envelope]:
    """Notify requests of the account (waits a moment for any that would come)."""
    return await read_topic(
        playbooks.bootstrap,
        topics.NOTIFY_REQUESTS,
        match=lambda e: e.account_id == account,
        count=0,
        settle=1.5,
    )


async def _all_cancelled(playbooks: Playbooks, account: str, count: int) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = await until(
        lambda: playbooks.groups(account),
        lambda g: len(g) == count and all(x["status"] == "cancelled" for x in g),
    )
    return groups


async def _tasks(playbooks: Playbooks, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    for group in groups:
        tasks += (await playbooks.get(f"/v1/task-groups/{group['id']}"))["tasks"]
    return tasks


async def test_churn_trait_cancels_open_groups_and_the_pending_email_is_not_sent(
    playbooks: Playbooks,
) -> None:
    account, owner = new_account(), new_csm("eve")
    await playbooks.client.post("/v1/csms", json={"email": owner, "name": "Eve Eng"})
    await playbooks.account(account, name="Gone Co", owner=owner, stage="onboarding")
    await playbooks.contact(account, "u1", email="pat@gone.test", name="Pat", role="admin")
    await playbooks.wait_contacts(account, 1)
    groups = await playbooks.wait_groups(account, 1)
    emails = [t for t in await _tasks(playbooks, groups) if t["automated"]]
    assert emails and all(t["status"] == "open" and t["sent_at"] is None for t in emails)

    await playbooks.account(account, traits={"status": "churned", "churn_reason": "budget"})
    closed = await _all_cancelled(playbooks, account, len(groups))
    assert {g["closed_reason"] for g in closed} == {"account churned"}
    await playbooks.scheduler.run_once(playbooks.clock.now + timedelta(days=30))
    tasks = await _tasks(playbooks, closed)
    assert {t["status"] for t in tasks} == {"cancelled"}
    assert [t["sent_at"] for t in tasks] == [None] * len(tasks)
    assert await _sent_to(playbooks, account) == []


async def test_alert_resolved_for_churn_cancels_every_group_of_the_account(
    playbooks: Playbooks,
) -> None:
    account, owner = new_account(), new_csm("fay")
    await playbooks.account(account, name="Left Co", owner=owner, stage="onboarding")
    await playbooks.contact(account, "u1", email="kim@left.test", name="Kim", role="admin")
    await playbooks.wait_contacts(account, 1)
    onboarding = await playbooks.wait_groups(account, 1)
    alert_id = await playbooks.alert(account, rule_type="score_drop", owner=owner)
    groups = await playbooks.wait_groups(account, len(onboarding) + 1)
    assert "adoption-risk" in {g["playbook_id"] for g in groups}

    # A resolve because the account churned cancels every group, not only the alert's.
    await playbooks.alert(
        account,
        type="alert.resolved",
        alert_id=alert_id,
        rule_type="score_drop",
        status="resolved",
        details={"resolution": "churned"},
    )
    await until(lambda: playbooks.groups(account, status="open"), lambda g: g == [])
    cancelled = await playbooks.groups(account, status="cancelled")
    assert len(cancelled) == len(groups) and {g["closed_reason"] for g in cancelled} == {
        "account churned"
    }
    await playbooks.scheduler.run_once(playbooks.clock.now + timedelta(days=30))
    assert await _sent_to(playbooks, account) == []
