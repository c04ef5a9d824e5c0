"""Alerts in (health.alerts.v1 envelopes), task groups out: matching, owner, due dates,
replays, absorbing, exit on resolve. Real broker; SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.playbooks.conftest import Playbooks, new_account, new_csm, until


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_alert_starts_matching_group_assigned_to_owner_with_due_dates(
    playbooks: Playbooks,
) -> None:
    account, ann = new_account(), new_csm("ann.lee")
    await playbooks.account(account, name="Acme", owner=ann, mrr=5000, stage="active")
    alert_id = await playbooks.alert(account, rule_type="score_drop", owner=ann)
    [group] = await playbooks.wait_groups(account, 1)
    assert group["playbook_id"] == "adoption-risk"
    assert (group["assignee"], group["assignment_rule"]) == (ann, "owner")
    assert group["trigger_key"] == f"alert:{alert_id}" and group["status"] == "open"
    assert group["context"]["alert"]["rule_type"] == "score_drop"

    detail = await playbooks.get(f"/v1/task-groups/{group['id']}")
    started = _at(detail["started_at"])
    steps = {t["step_key"]: t for t in detail["tasks"]}
    assert list(steps) == ["owner-slack", "review-data", "checkin-email", "call"]
    assert {t["assignee"] for t in steps.values()} == {ann}
    assert _at(steps["review-data"]["due_at"]) - started == timedelta(days=1)
    assert _at(steps["call"]["due_at"]) - started == timedelta(days=3)
    # Day 0, after the review window: pending (the CSM may skip it) until it ends.
    checkin = steps["checkin-email"]
    assert _at(checkin["send_after"]) - started == timedelta(minutes=15)
    assert checkin["review_until"] == checkin["send_after"] and checkin["pending_send"]
    assert _at(steps["owner-slack"]["send_after"]) == started  # the owner hears at once
    assert steps["owner-slack"]["review_until"] is None
    assert steps["checkin-email"]["automated"] and not steps["call"]["automated"]

    # The owner joined the team on their own.
    csm = await playbooks.get(f"/v1/csms/{ann}")
    assert csm["auto_added"] is True and csm["name"].startswith("Ann Lee ")
    assert csm["open_tasks"] == 2  # review-data and call; automated steps are no load


async def test_same_alert_twice_starts_one_group_and_open_group_absorbs_new_alert(
    playbooks: Playbooks,
) -> None:
    account = new_account()
    alert_id = await playbooks.alert(account, rule_type="inactivity", owner="bo@cs.test")
    await playbooks.alert(account, alert_id=alert_id, rule_type="inactivity", owner="bo@cs.test")
    await playbooks.alert(
        account, type="alert.updated", alert_id=alert_id, rule_type="inactivity", severity=4
    )
    # A second alert of another rule for the same playbook is absorbed by the open group.
    await playbooks.alert(account, rule_type="inactivity", rule_id="rule-2")
    # ...and a marker alert of another playbook shows everything before it was consumed.
    await playbooks.alert(account, rule_type="expansion")
    groups = await playbooks.wait_groups(account, 2)
    by_playbook = {g["playbook_id"]: g for g in groups}
    assert set(by_playbook) == {"inactivity-reengagement", "expansion"}
    assert by_playbook["inactivity-reengagement"]["triggers"] == 2
    tasks = await playbooks.get("/v1/tasks", account_id=account)
    assert tasks["total"] == 2 + 3  # one set of steps per group, none duplicated


async def test_resolved_alert_exits_group_and_cancels_remaining_steps(
    playbooks: Playbooks,
) -> None:
    account = new_account()
    alert_id = await playbooks.alert(account, rule_type="metric_decline", owner="cy@cs.test")
    [group] = await playbooks.wait_groups(account, 1)
    await playbooks.alert(
        account,
        type="alert.resolved",
        alert_id=alert_id,
        rule_type="metric_decline",
        status="resolved",
    )
    [closed] = await until(
        lambda: playbooks.groups(account), lambda g: g and g[0]["status"] == "exited"
    )
    assert closed["closed_reason"] == "alert resolved" and closed["progress"] == 1.0
    detail = await playbooks.get(f"/v1/task-groups/{group['id']}")
    assert {t["status"] for t in detail["tasks"]} == {"cancelled"}
    # Nothing left to send, even a month later.
    await playbooks.scheduler.run_once(playbooks.clock.now + timedelta(days=30))
    detail = await playbooks.get(f"/v1/task-groups/{group['id']}")
    assert [t["sent_at"] for t in detail["tasks"]] == [None] * 4


async def test_snoozed_or_deferred_alerts_start_nothing(playbooks: Playbooks) -> None:
    account = new_account()
    await playbooks.alert(account, rule_type="score_drop", status="deferred")
    await playbooks.alert(account, rule_type="score_drop", status="snoozed")
    await playbooks.alert(account, rule_type="expansion")  # marker
    groups = await playbooks.wait_groups(account, 1)
    assert [g["playbook_id"] for g in groups] == ["expansion"]


async def test_exit_waits_until_every_absorbed_alert_is_resolved(playbooks: Playbooks) -> None:
    account = new_account()
    first = await playbooks.alert(account, rule_type="inactivity", rule_id="r-1")
    second = await playbooks.alert(account, rule_type="inactivity", rule_id="r-2")  # absorbed
    await playbooks.alert(account, rule_type="expansion")  # marker
    groups = await playbooks.wait_groups(account, 2)
    [group] = [g for g in groups if g["playbook_id"] == "inactivity-reengagement"]
    assert group["triggers"] == 2

    async def resolve(alert_id: str, marker: int) -> dict[str, object]:
        await playbooks.alert(
            account,
            type="alert.resolved",
            alert_id=alert_id,
            rule_type="inactivity",
            status="resolved",
        )
        await playbooks.alert(account, rule_type="score_drop", rule_id=f"m-{marker}")
        # The marker (same account, same partition, later) was consumed: so was the resolve.
        await until(
            lambda: playbooks.groups(account, playbook_id="adoption-risk"),
            lambda g: len(g) == 1 and g[0]["triggers"] == marker,
        )
        detail: dict[str, object] = await playbooks.get(f"/v1/task-groups/{group['id']}")
        return detail

    still = await resolve(first, 1)
    assert still["status"] == "open" and still["steps_open"] == 2  # one alert still open
    done = await resolve(second, 2)
    assert (done["status"], done["closed_reason"]) == ("exited", "alert resolved")
