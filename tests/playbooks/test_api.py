"""The REST API: templates as JSON and YAML with 422s naming the field, scopes, the team,
starting a group by hand, working its tasks to completion, stats."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import select

from services.playbooks.models import Task
from shared.broker import EmbeddedBroker
from shared.db import create_engine, create_sessionmaker
from tests.playbooks.conftest import Playbooks, new_account, new_csm, running
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
    assert _locs(r) == [["body", "assignee"]]
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


async def _csm(c: httpx.AsyncClient, email: str, **fields: Any) -> None:
    r = await c.post("/v1/csms", json={"email": email, "name": email[:3], **fields})
    assert r.status_code == 201, r.text


async def _start(
    c: httpx.AsyncClient, account: str, *, playbook: str = "expansion", **fields: Any
) -> dict[str, Any]:
    r = await c.post(
        "/v1/task-groups", json={"account_id": account, "playbook_id": playbook, **fields}
    )
    assert r.status_code == 201, r.text
    group: dict[str, Any] = r.json()["task_group"]
    return group


async def test_explicit_assignees_must_be_active_csms(playbooks: Playbooks) -> None:
    c = playbooks.client
    active, gone, account = new_csm("act"), new_csm("gone"), new_account()
    await _csm(c, active, capacity=0)  # an explicit choice overrides capacity
    await _csm(c, gone)
    assert (await c.delete(f"/v1/csms/{gone}")).status_code == 204

    for assignee in ("nobody@cs.test", gone):
        r = await c.post(
            "/v1/task-groups",
            json={"account_id": account, "playbook_id": "expansion", "assignee": assignee},
        )
        assert _locs(r) == [["body", "assignee"]]
    assert (await playbooks.get("/v1/task-groups", account_id=account))["total"] == 0
    assert (await c.get("/v1/csms/nobody@cs.test")).status_code == 404  # not auto-added

    group = await _start(c, account, assignee=active)
    assert group["assignee"] == active and group["assignment_rule"] == "manual"
    qualify = next(t for t in group["tasks"] if t["step_key"] == "qualify")
    r = await c.post(f"/v1/tasks/{qualify['id']}/reassign", json={"assignee": gone})
    assert _locs(r) == [["body", "assignee"]]
    assert (await playbooks.get(f"/v1/tasks/{qualify['id']}"))["assignee"] == active
    r = await c.post(f"/v1/tasks/{qualify['id']}/reassign", json={"assignee": None})
    assert r.status_code == 200 and r.json()["assignee"] is None


async def test_out_of_range_due_dates_are_a_422(playbooks: Playbooks) -> None:
    c = playbooks.client
    group = await _start(c, new_account())
    task = f"/v1/tasks/{group['tasks'][1]['id']}"
    for due_at in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "soon", 0):
        assert _locs(await c.patch(task, json={"due_at": due_at})) == [["body", "due_at"]]
    r = await c.patch(task, json={"due_at": "2030-01-31T09:00:00+02:00"})
    assert r.status_code == 200
    stored = (await playbooks.get(task))["due_at"]
    assert datetime.fromisoformat(stored) == datetime(2030, 1, 31, 7, tzinfo=UTC)


async def test_skip_never_overwrites_a_step_the_scheduler_just_sent(playbooks: Playbooks) -> None:
    group = await _start(playbooks.client, new_account())
    slack = next(t for t in group["tasks"] if t["step_key"] == "owner-slack")
    engine = create_engine(playbooks.database_url)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            # What a scheduler pass does: lock the due row, mark it sent, commit after the ack.
            row = await session.scalar(select(Task).where(Task.id == slack["id"]).with_for_update())
            assert row is not None
            row.status, row.sent_at = "done", playbooks.clock.now
            await session.flush()
            skip = asyncio.create_task(playbooks.client.post(f"/v1/tasks/{slack['id']}/skip"))
            await asyncio.sleep(0.5)
            assert not skip.done()  # the skip waits for the row
        r = await skip
    finally:
        await engine.dispose()
    assert r.status_code == 409 and r.json()["detail"] == "task is done"
    step = await playbooks.get(f"/v1/tasks/{slack['id']}")
    assert (step["status"], step["sent_at"] is not None) == ("done", True)


async def _own_copy(c: httpx.AsyncClient, playbook_id: str) -> str:
    """A manual-only copy of a built-in under an id of this test's own: other tests' alerts
    on the shared broker start built-ins, never it, so its groups and stats are ours."""
    body = (await c.get(f"/v1/playbooks/{playbook_id}")).json()
    for key in ("builtin", "version", "created_at", "updated_at"):
        body.pop(key, None)
    body |= {"id": f"{playbook_id}-{uuid.uuid4().hex[:6]}", "trigger": {"kind": "manual"}}
    body.pop("triggers", None)
    r = await c.post("/v1/playbooks", json=body)
    assert r.status_code == 201, r.text
    return str(body["id"])


async def test_filters_cancel_csm_changes_and_stats_on_a_real_case(playbooks: Playbooks) -> None:
    c = playbooks.client
    u, v = new_csm("uma"), new_csm("vic")
    await _csm(c, u)
    await _csm(c, v)
    ours = await _own_copy(c, "expansion")
    done_acct, cancel_acct, open_acct, vic_acct = (new_account() for _ in range(4))
    finished = await _start(c, done_acct, playbook=ours, assignee=u)
    cancelled = await _start(c, cancel_acct, playbook=ours, assignee=u)
    still_open = await _start(c, open_acct, playbook=ours, assignee=u)
    vics = await _start(c, vic_acct, playbook=ours, assignee=v)
    started_at = datetime.fromisoformat(still_open["started_at"])

    playbooks.clock.advance(days=4)  # qualify (day 3) is late, propose (day 10) is not
    for t in finished["tasks"]:
        verb = "skip" if t["automated"] else "complete"
        assert (await c.post(f"/v1/tasks/{t['id']}/{verb}")).status_code == 200
    r = await c.post(f"/v1/task-groups/{cancelled['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert {t["status"] for t in r.json()["tasks"]} == {"cancelled"}
    assert r.json()["closed_reason"] == "cancelled by hand"
    assert (await c.post(f"/v1/task-groups/{cancelled['id']}/cancel")).status_code == 409
    assert (await c.post("/v1/task-groups/nope/cancel")).status_code == 404

    def ids(page: dict[str, Any]) -> set[str]:
        return {item["id"] for item in page["items"]}

    groups = "/v1/task-groups"
    mine_only = {"playbook_id": ours}
    open_ones = await playbooks.get(groups, status="open", **mine_only)
    assert ids(open_ones) == {still_open["id"], vics["id"]}
    assert ids(await playbooks.get(groups, status="completed", **mine_only)) == {finished["id"]}
    assert ids(await playbooks.get(groups, status="cancelled", **mine_only)) == {cancelled["id"]}
    assert ids(await playbooks.get(groups, assignee=v)) == {vics["id"]}
    assert ids(await playbooks.get(groups, assignee=u.upper(), status="open")) == {still_open["id"]}
    assert (await playbooks.get(groups, assignee="unassigned"))["total"] == 0

    mine = {"task_group_id": still_open["id"]}
    late = await playbooks.get("/v1/tasks", overdue="true", **mine)
    on_time = await playbooks.get("/v1/tasks", overdue="false", **mine)
    # The Slack step is late too: no scheduler ran (automated steps are no CSM's load).
    assert [t["step_key"] for t in late["items"]] == ["owner-slack", "qualify"]
    assert [t["step_key"] for t in on_time["items"]] == ["propose"]
    assert all(not t["overdue"] for t in on_time["items"])
    before = (started_at + timedelta(days=5)).isoformat()
    soon = await playbooks.get("/v1/tasks", due_before=before, **mine)
    assert [t["step_key"] for t in soon["items"]] == ["owner-slack", "qualify"]

    stats = await playbooks.get("/v1/stats")
    [expansion] = [p for p in stats["playbooks"] if p["playbook_id"] == ours]
    assert (expansion["started"], expansion["open"], expansion["completed"]) == (4, 2, 1)
    assert (expansion["exited"], expansion["completion_rate"]) == (1, 0.25)
    assert expansion["median_days_to_complete"] == 4.0
    per_csm = {s["email"]: s for s in stats["csms"]}
    assert (per_csm[u]["open"], per_csm[u]["overdue"], per_csm[u]["done_this_week"]) == (2, 1, 2)
    assert (per_csm[v]["open"], per_csm[v]["overdue"]) == (2, 1)

    # The team: change, deactivate (kept, no new work), unknown ones.
    r = await c.patch(f"/v1/csms/{v}", json={"name": "Vic V", "capacity": 3, "slack_id": "U9"})
    assert r.status_code == 200
    assert (r.json()["name"], r.json()["capacity"], r.json()["slack_id"]) == ("Vic V", 3, "U9")
    r = await c.patch(f"/v1/csms/{v}", json={"slack_id": None, "team": "emea"})
    assert (r.json()["slack_id"], r.json()["team"], r.json()["name"]) == (None, "emea", "Vic V")
    assert _locs(await c.patch(f"/v1/csms/{v}", json={"capacity": -1})) == [["body", "capacity"]]
    assert (await c.patch("/v1/csms/x@cs.test", json={"name": "X"})).status_code == 404
    assert (await c.delete(f"/v1/csms/{v}")).status_code == 204
    assert (await playbooks.get(f"/v1/csms/{v}"))["active"] is False
    inactive = await playbooks.get("/v1/csms", active="false")
    assert [x["email"] for x in inactive] == [v]
    assert (await c.delete("/v1/csms/x@cs.test")).status_code == 404


async def test_deleted_builtin_stays_deleted_after_a_restart(
    playbooks: Playbooks, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    assert (await playbooks.client.delete("/v1/playbooks/expansion")).status_code == 204
    renamed = (await playbooks.get("/v1/playbooks/renewal-preparation")) | {"name": "Renewal!"}
    for key in ("builtin", "version", "created_at", "updated_at"):
        del renamed[key]
    r = await playbooks.client.put("/v1/playbooks/renewal-preparation", json=renamed)
    assert r.status_code == 200, r.text
    async with running(broker, playbooks.database_url, tmp_path / "second") as second:
        ids = {p["id"] for p in await second.get("/v1/playbooks")}
        assert len(ids) == 8 and "expansion" not in ids
        assert (await second.client.get("/v1/playbooks/expansion")).status_code == 404
        kept = await second.get("/v1/playbooks/renewal-preparation")
        assert (kept["name"], kept["version"]) == ("Renewal!", 2)
