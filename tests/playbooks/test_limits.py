"""What PostgreSQL refuses and SQLite lets through: every string a template or a consumed
message puts in a column fits that column, so nothing 500s and no batch is dead-lettered.
Run on both backends (on SQLite these pass either way; PostgreSQL is what they guard)."""

from __future__ import annotations

import uuid
from typing import Any

from tests.playbooks.conftest import Playbooks, new_account, until


def _playbook(pid: str, event: str) -> dict[str, Any]:
    values = [f"{i:03d}" + "v" * 97 for i in range(100)]  # its repr is ~10 KB
    return {
        "id": pid,
        "name": "Long names",
        "phase": "adoption",
        "trigger": {"kind": "manual"},
        "steps": [
            {"key": "look", "title": "Look", "due_days": 1},
            {
                "key": "maybe",
                "title": "Only for some plans",
                "conditions": [{"field": "plan", "op": "in", "value": values}],
            },
        ],
        "exit": [{"kind": "event_seen", "events": [event]}],
    }


async def test_template_strings_fit_their_columns_and_such_a_group_starts(
    playbooks: Playbooks,
) -> None:
    c = playbooks.client
    pid = f"long-{uuid.uuid4().hex[:6]}"
    r = await c.post("/v1/playbooks", json=_playbook(pid, "E" * 201))
    assert r.status_code == 422, r.text
    assert [d["loc"] for d in r.json()["detail"]] == [["body", "exit", 0, "events", 0]]
    assert (await c.post("/v1/playbooks", json=_playbook(pid, "E" * 200))).status_code == 201

    account = new_account()
    r = await c.post("/v1/task-groups", json={"account_id": account, "playbook_id": pid})
    assert r.status_code == 201, r.text
    maybe = next(t for t in r.json()["task_group"]["tasks"] if t["step_key"] == "maybe")
    assert maybe["status"] == "skipped" and len(maybe["detail"]) == 1000


async def test_over_long_values_in_consumed_messages_are_cut_or_dropped(
    playbooks: Playbooks,
) -> None:
    account, other, quiet = new_account(), new_account(), new_account()
    await playbooks.account(
        account,
        name="N" * 400,
        plan="P" * 150,
        segment="S" * 150,
        owner="o" * 400 + "@cs.test",  # too long to be an email: no owner
        stage="onboarding",
    )
    long_email = "e" * 400 + "@x.test"
    await playbooks.contact(account, "u1", email=long_email, name="C" * 400, role="admin")
    await playbooks.contact(account, "u" * 300, email="ok@x.test")  # cannot be keyed: dropped
    await playbooks.contact(account, "u2", email="last@x.test")  # marker for this account
    # An email of 320 characters with a 250-character local part: a valid owner.
    owner = "a" * 250 + "@" + "b" * 60 + ".cs.test"
    await playbooks.alert(other, rule_type="expansion", owner=owner)
    await playbooks.alert(quiet, rule_type="expansion", alert_id="x" * 300)  # ignored
    await playbooks.alert(quiet, rule_type="inactivity")  # marker: the above was consumed

    [marker] = await playbooks.wait_groups(quiet, 1)
    assert marker["playbook_id"] == "inactivity-reengagement"
    [expansion] = await playbooks.wait_groups(other, 1)
    assert expansion["assignee"] == owner
    csm = await playbooks.get(f"/v1/csms/{owner}")
    assert csm["auto_added"] and csm["name"] == ("A" + "a" * 249)[:200]

    stored = await until(
        lambda: playbooks.get(f"/v1/accounts/{account}"), lambda a: len(a["contacts"]) >= 2
    )
    assert (len(stored["name"]), len(stored["plan"]), len(stored["segment"])) == (300, 100, 100)
    assert stored["owner"] is None and stored["stage"] == "onboarding"
    contact, last = sorted(stored["contacts"], key=lambda c: c["user_id"])
    assert (contact["user_id"], last["user_id"]) == ("u1", "u2")
    assert contact["email"] is None
    assert len(contact["name"]) == 300
    [tech_touch] = await playbooks.wait_groups(account, 1)  # onboarding started as usual
    assert tech_touch["playbook_id"] == "tech-touch-onboarding"
