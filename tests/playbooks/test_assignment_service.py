"""Assignment through the service: round-robin and least-loaded spread tasks within a team,
and nobody gets more open tasks than their capacity (the rest wait unassigned)."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from tests.playbooks.conftest import Playbooks, new_account, new_csm, until


def _playbook(pid: str, rule_type: str, rule: str, team: str) -> dict[str, Any]:
    return {
        "id": pid,
        "name": f"Test {rule}",
        "phase": "risk",
        "trigger": {"kind": "alert", "rule_types": [rule_type]},
        "assignee": {"rule": rule, "team": team, "fallback": "unassigned"},
        "steps": [
            {"key": "look", "title": "Look", "due_days": 1},
            {"key": "act", "title": "Act", "due_days": 2},
        ],
    }


async def _assignees(playbooks: Playbooks, pid: str, count: int) -> Counter[str | None]:
    page = await until(
        lambda: playbooks.get("/v1/task-groups", playbook_id=pid),
        lambda p: p["total"] >= count,
    )
    assert page["total"] == count
    return Counter(g["assignee"] for g in page["items"])


async def test_round_robin_and_least_loaded_spread_and_respect_capacity(
    playbooks: Playbooks,
) -> None:
    tag = uuid.uuid4().hex[:8]
    rr_team, ll_team = f"rr-{tag}", f"ll-{tag}"
    a, b, c = new_csm("a"), new_csm("b"), new_csm("c")
    x, y = f"x.{tag}@cs.test", f"y.{tag}@cs.test"  # x sorts before y
    team = [(a, rr_team, 4), (b, rr_team, 4), (c, rr_team, 2), (x, ll_team, 8), (y, ll_team, 4)]
    for email, name, capacity in team:
        r = await playbooks.client.post(
            "/v1/csms", json={"email": email, "name": email, "team": name, "capacity": capacity}
        )
        assert r.status_code == 201, r.text
    for pid, rule, name in (
        (f"rr-{tag}", "round_robin", rr_team),
        (f"ll-{tag}", "least_loaded", ll_team),
    ):
        r = await playbooks.client.post("/v1/playbooks", json=_playbook(pid, pid, rule, name))
        assert r.status_code == 201, r.text

    # x already has 2 open tasks: least-loaded starts with y.
    r = await playbooks.client.post(
        "/v1/task-groups",
        json={"account_id": new_account(), "playbook_id": f"ll-{tag}", "assignee": x},
    )
    assert r.status_code == 201 and r.json()["task_group"]["assignee"] == x

    for _ in range(6):
        await playbooks.alert(new_account(), rule_type=f"rr-{tag}")
        await playbooks.alert(new_account(), rule_type=f"ll-{tag}")

    # 2 tasks per group: a and b fit two groups (capacity 4), c one (capacity 2), then none.
    assert await _assignees(playbooks, f"rr-{tag}", 6) == {a: 2, b: 2, c: 1, None: 1}
    # y(0)->2, x(2)=y(2)->x 4, y->4, x->6, y full so x->8, both full -> unassigned.
    assert await _assignees(playbooks, f"ll-{tag}", 7) == {x: 4, y: 2, None: 1}
    loads = {c["email"]: c["open_tasks"] for c in await playbooks.get("/v1/csms")}
    assert [loads[e] for e in (a, b, c, x, y)] == [4, 4, 2, 8, 4]
    unassigned = await playbooks.get("/v1/tasks", assignee="unassigned", status="open")
    assert unassigned["total"] >= 4
