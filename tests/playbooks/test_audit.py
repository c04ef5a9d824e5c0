"""Playbooks' audit trail: a playbook edit (YAML and JSON), the CSM team and a task
reassignment, each recorded with who, what, target and result."""

from __future__ import annotations

import uuid
from typing import Any

import yaml

from shared.auth import create_token, verify_token
from tests.playbooks.conftest import Playbooks, new_account, new_csm
from tests.playbooks.test_api import PLAYBOOK_YAML
from tests.support import TEST_SECRET, auth

HOOK = "https://hooks.slack.com/services/T0AUDIT/B0AUDIT/hooksecret123456"


def bearer(scope: str, subject: str) -> tuple[dict[str, str], str]:
    token = create_token(TEST_SECRET, scopes=[scope], subject=subject)
    return {"Authorization": f"Bearer {token}"}, verify_token(TEST_SECRET, token).token_id


async def test_playbook_team_and_task_changes_are_audited(playbooks: Playbooks) -> None:
    c = playbooks.client
    admin, admin_id = bearer("admin", "lead-carol")
    writer, writer_id = bearer("write", "csm-dan")
    pid = f"qbr-{uuid.uuid4().hex[:6]}"
    body = PLAYBOOK_YAML.format(pid=pid)
    yaml_headers = {"Content-Type": "application/yaml", **admin}
    assert (await c.post("/v1/playbooks", content=body, headers=yaml_headers)).status_code == 201
    renamed = yaml.safe_load(body) | {
        "name": "QBR, the sequel",
        "description": f"escalate via {HOOK}",  # a secret pasted into free text
    }
    r = await c.put(f"/v1/playbooks/{pid}", json=renamed, headers=admin)
    assert r.status_code == 200, r.text
    r = await c.put(f"/v1/playbooks/{pid}", json=renamed, headers=writer)
    assert r.status_code == 403

    u, v = new_csm("uma"), new_csm("vic")
    for email in (u, v):
        r = await c.post("/v1/csms", json={"email": email, "name": "CSM"}, headers=writer)
        assert r.status_code == 201, r.text
    start = {"account_id": new_account(), "playbook_id": "expansion", "assignee": u}
    r = await c.post("/v1/task-groups", json=start, headers=writer)
    assert r.status_code == 201, r.text
    group_id = r.json()["task_group"]["id"]
    task = next(t for t in r.json()["task_group"]["tasks"] if t["step_key"] == "propose")
    r = await c.post(f"/v1/tasks/{task['id']}/reassign", json={"assignee": v}, headers=writer)
    assert r.status_code == 200 and r.json()["assignee"] == v

    async def audit(**params: Any) -> list[dict[str, Any]]:
        r = await c.get("/v1/audit", params=params, headers=admin)
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    mine = await audit(subject="lead-carol")
    assert [(i["action"], i["target"], i["status"]) for i in mine] == [
        ("replace_playbook", pid, 200),
        ("create_playbook", pid, 201),
    ]
    created, replaced = mine[1], mine[0]
    assert created["token_id"] == admin_id and created["route"] == "POST /v1/playbooks"
    assert created["summary"]["body"]["steps"][1]["template_id"] == "renewal-prep"  # YAML read
    assert replaced["route"] == "PUT /v1/playbooks/{playbook_id}"
    assert replaced["summary"]["body"]["name"] == "QBR, the sequel"
    assert replaced["summary"]["body"]["description"] == "[redacted]"

    theirs = await audit(subject="csm-dan")
    assert [(i["action"], i["status"]) for i in theirs] == [
        ("reassign_task", 200),
        ("start_task_group", 201),
        ("put_csm", 201),
        ("put_csm", 201),
        ("replace_playbook", 403),
    ]
    assert {i["token_id"] for i in theirs} == {writer_id}
    reassign = theirs[0]
    assert reassign["target"] == task["id"]
    assert reassign["path"] == f"/v1/tasks/{task['id']}/reassign"
    assert reassign["summary"] == {"body": {"assignee": v}}
    assert theirs[1]["target"] == group_id  # the created group, from the answer
    assert {theirs[2]["target"], theirs[3]["target"]} == {u, v}  # the CSM's email, as answered
    assert [i["subject"] for i in await audit(action="reassign_task")] == ["csm-dan"]
    assert (await c.get("/v1/audit", headers=auth("write"))).status_code == 403
    raw = repr(await audit(limit=500))
    assert "hooksecret" not in raw and "hooks.slack.com" not in raw
    for headers in (admin, writer):
        assert headers["Authorization"].split()[1] not in raw
