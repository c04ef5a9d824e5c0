"""The REST API: templates as JSON and YAML with 422s naming the field, scopes, the team,
starting a group by hand, working its tasks to completion, stats."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import yaml

from tests.playbooks.conftest import Playbooks, new_account, new_csm
from tests.support import auth

PLAYBOOK_YAML = """
id: {pid}
name: Quarterly review
phase: adoption
trigger: {{kind: manual}}
steps:
  - key: prepare
    title: Prepare the review deck
    due_days: 5
  - key: invite
    type: email
    title: Invite the sponsor
    template_id: renewal-prep
    to: {{kind: contacts, roles: [sponsor]}}
exit: {{kind: stage_changed, stages: [churned]}}
"""


def _locs(r: httpx.Response) -> list[list[Any]]:
    assert r.status_code == 422, r.text
    return [d["loc"] for d in r.json()["detail"]]


async def test_playbook_templates_crud_yaml_scopes_and_validation(playbooks: Playbooks) -> None:
    c = playbooks.client
    r = await c.get("/v1/playbooks", headers=auth("read"))
    assert r.status_code == 200 and len(r.json()) == 9
    assert all(p["builtin"] for p in r.json())
    assert (await c.get("/v1/playbooks", headers={"Authorization": ""})).status_code == 401
    spec = (await c.get("/openapi.json")).json()
    assert "steps" in spec["components"]["schemas"]["PlaybookTemplate"]["properties"]
    pid = f"qbr-{uuid.uuid4().hex[:6]}"
    body = PLAYBOOK_YAML.format(pid=pid)
    yaml_headers = {"Content-Type": "application/yaml"}
    r = await c.post("/v1/playbooks", content=body, headers={**yaml_headers, **auth("write")})
    assert r.status_code == 403  # templates need admin

    r = await c.post("/v1/playbooks", content=body, headers=yaml_headers)
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1 and r.json()["steps"][1]["to"]["roles"] == ["sponsor"]
    assert (await c.post("/v1/playbooks", content=body, headers=yaml_headers)).status_code == 409
    r = await c.get(f"/v1/playbooks/{pid}", params={"format": "yaml"})
    assert yaml.safe_load(r.text)["steps"][0]["key"] == "prepare"

    bad = yaml.safe_load(body)
    del bad["steps"][1]["template_id"]
    assert _locs(await c.post("/v1/playbooks", json=bad)) == [["body", "steps", 1, "template_id"]]
    bad = yaml.safe_load(body) | {"phase": "someday"}
    assert _locs(await c.post("/v1/playbooks", json=bad)) == [["body", "phase"]]
    r = await c.post("/v1/playbooks", content=b"steps: [unclosed", headers=yaml_headers)
    assert _locs(r) == [["body"]]
    r = await c.put(f"/v1/playbooks/{pid}", json=yaml.safe_load(body) | {"id": "other"})
    assert _locs(r) == [["body", "id"]]

    renamed = yaml.safe_load(body) | {"name": "QBR"}
    r = await c.put(f"/v1/playbooks/{pid}", json=renamed)
    assert r.status_code == 200 and (r.json()["name"], r.json()["version"]) == ("QBR", 2)
    assert (await c.delete(f"/v1/playbooks/{pid}")).status_code == 204
    assert (await c.get(f"/v1/playbooks/{pid}")).status_code == 404

    r = await c.post("/v1/csms", json={"email": "not-an-email", "name": "X"})
    assert _locs(r) == [["body", "email"]]
    r = await c.post("/v1/csms", json={"email": new_csm(), "name": "X", "capacity": -1})
    assert _locs(r) == [["body", "capacity"]]
    assert _locs(await c.get("/v1/tasks", params={"due_before": "soon"})) == [
        ["query", "due_before"]
    ]
    assert _locs(await c.get("/v1/tasks", params={"due_before": "0.5"})) == [
        ["query", "due_before"]
    ]
    assert _locs(await c.get("/v1/tasks", params={"colour": "red"})) == [["query", "colour"]]
    repeated = await c.get("/v1/tasks", params=[("status", "open"), ("status", "done")])
    assert _locs(repeated) == [["query", "status"]]
    r = await c.post("/v1/csms", json={"email": new_csm(), "name": "X", "active": 0})
    assert _locs(r) == [["body", "active"]]
    r = await c.options("/v1/playbooks")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"


async def test_manual_group_tasks_to_completion_and_stats(playbooks: Playbooks) -> None:
    c = playbooks.client
    u, v, account = new_csm("uma"), new_csm("vic"), new_account()
    for email in (u, v):
        r = await c.post(
            "/v1/csms", json={"email": email, "name": email[:3]}, headers=auth("write")
        )
        assert r.status_code == 201
    start = {"account_id": account, "playbook_id": "expansion", "assignee": u, "request_id": "r1"}
    r = await c.post("/v1/task-groups", json=start, headers=auth("write"))
    assert r.status_code == 201 and r.json()["created"] is True
    group = r.json()["task_group"]
    assert group["assignee"] == u and group["assignment_rule"] == "manual"
    again = await c.post("/v1/task-groups", json=start | {"request_id": "r2"})
    assert again.status_code == 200 and again.json()["task_group"]["id"] == group["id"]
    assert (await playbooks.get(f"/v1/task-groups/{group['id']}"))["triggers"] == 2
    assert (await c.post("/v1/task-groups", json=start)).status_code == 200  # r1 again

    tasks = {t["step_key"]: t for t in group["tasks"]}
    mine = await playbooks.get("/v1/tasks", assignee=u, status="open", type="task")
    assert {t["step_key"] for t in mine["items"]} == {"qualify", "propose"}
    assert (await c.post(f"/v1/tasks/{tasks['owner-slack']['id']}/complete")).status_code == 409
    r = await c.post(f"/v1/tasks/{tasks['owner-slack']['id']}/skip", json={"note": "told them"})
    assert r.json()["status"] == "skipped"

    r = await c.post(f"/v1/tasks/{tasks['propose']['id']}/reassign", json={"assignee": "no@x.io"})
    assert r.status_code == 404
    r = await c.post(f"/v1/tasks/{tasks['propose']['id']}/reassign", json={"assignee": v})
    assert r.json()["assignee"] == v
    propose = f"/v1/tasks/{tasks['propose']['id']}"
    assert _locs(await c.patch(propose, json={"due_at": "2030-01-01T00:00:00"})) == [
        ["body", "due_at"]
    ]
    r = await c.patch(propose, json={"due_at": tasks["propose"]["due_at"], "title": "Propose!"})
    assert r.status_code == 200 and r.json()["title"] == "Propose!"

    playbooks.clock.advance(days=11)  # qualify (3 days) and propose (10 days) are late
    overdue = await playbooks.get("/v1/tasks", overdue="true", account_id=account)
    assert {t["step_key"] for t in overdue["items"]} == {"qualify", "propose"}
    assert (await playbooks.get(f"/v1/task-groups/{group['id']}"))["overdue"] == 2

    qualify = tasks["qualify"]["id"]
    r = await c.post(f"/v1/tasks/{qualify}/comments", json={"author": u, "body": "Budget ok"})
    assert r.status_code == 201
    r = await c.post(f"/v1/tasks/{qualify}/complete", json={"note": "qualified", "author": u})
    assert r.json()["status"] == "done" and not r.json()["overdue"]
    detail = await playbooks.get(f"/v1/tasks/{qualify}")
    assert [x["body"] for x in detail["comments"]] == ["Budget ok", "qualified"]
    assert (await c.post(f"/v1/tasks/{qualify}/complete")).status_code == 409
    progress = (await playbooks.get(f"/v1/task-groups/{group['id']}"))["progress"]
    assert progress == round(2 / 3, 4)

    r = await c.post(f"/v1/tasks/{tasks['propose']['id']}/complete")
    done = await playbooks.get(f"/v1/task-groups/{group['id']}")
    assert (done["status"], done["progress"], done["closed_reason"]) == (
        "completed",
        1.0,
        "all steps finished",
    )

    stats = await playbooks.get("/v1/stats")
    per_csm = {s["email"]: s for s in stats["csms"]}
    assert (per_csm[u]["done_this_week"], per_csm[u]["open"]) == (1, 0)
    assert (per_csm[v]["done_this_week"], per_csm[v]["overdue"]) == (1, 0)
    expansion = next(p for p in stats["playbooks"] if p["playbook_id"] == "expansion")
    assert expansion["completed"] >= 1 and expansion["median_days_to_complete"] is not None
