"""Templates stored before validation tightened (written straight into the table here): they
start nothing, fail no batch and no GET, show ``invalid`` with their errors, and a PUT
with a valid body makes them start groups again. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
import yaml
from prometheus_client import REGISTRY
from structlog.testing import LogCapture

from services.playbooks import repository
from services.playbooks.library import LIBRARY_DIR
from services.playbooks.models import Playbook
from services.playbooks.templates import parse_yaml
from shared.db import create_engine, create_sessionmaker
from tests.playbooks.conftest import Playbooks, new_account

METRIC = "uptake_playbooks_invalid_templates_total"


def _template(pid: str, rule: str, **over: Any) -> dict[str, Any]:
    """As a template is stored (model_dump of a valid one), with ``over`` merged in."""
    data: dict[str, Any] = {
        "id": pid,
        "name": f"Play {pid}",
        "phase": "risk",
        "enabled": True,
        "triggers": [{"kind": "alert", "rule_types": [rule], "min_severity": 1}],
        "steps": [
            {"key": "mail", "type": "email", "title": "Mail", "template_id": "adoption-checkin"},
            {"key": "call", "title": "Call", "due_days": 2},
        ],
        "exit": [{"kind": "event_seen", "events": [f"done-{pid}"]}],
    }
    return {**data, **over}


async def _store_raw(db_url: str, definition: dict[str, Any]) -> None:
    """Write the row as an older release would have, skipping today's validation."""
    engine = create_engine(db_url)
    now = datetime.now(UTC)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            session.add(
                Playbook(
                    id=definition["id"],
                    name=definition["name"],
                    phase=definition["phase"],
                    enabled=True,
                    builtin=False,
                    definition=definition,
                    version=1,
                    created_at=now,
                    updated_at=now,
                )
            )
    finally:
        await engine.dispose()


async def _exit_event_names(db_url: str) -> set[str]:
    engine = create_engine(db_url)
    try:
        async with create_sessionmaker(engine)() as session:
            return await repository.exit_event_names(session)
    finally:
        await engine.dispose()


async def test_invalid_stored_templates_are_skipped_listed_and_fixed_by_put(
    playbooks: Playbooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    c, tag = playbooks.client, uuid.uuid4().hex[:6]
    rule, fresh, role, cond = f"stale-{tag}", f"fresh-{tag}", f"role-{tag}", f"cond-{tag}"
    assert (await c.post("/v1/playbooks", json=_template(fresh, rule))).status_code == 201
    long_role = _template(role, rule)
    long_role["steps"][0]["to"] = {"kind": "contacts", "roles": ["r" * 150]}
    bad_cond = _template(cond, rule, conditions=[{"field": "mrr", "op": "gte", "value": "lots"}])
    await _store_raw(playbooks.database_url, long_role)
    await _store_raw(playbooks.database_url, bad_cond)
    before = REGISTRY.get_sample_value(METRIC) or 0.0
    logs = LogCapture()  # the app's logger writes to a stderr bound at startup; tap it
    monkeypatch.setattr(repository, "log", structlog.wrap_logger(None, processors=[logs]))

    # (a) The alert's batch goes through: the valid playbook starts, the invalid ones don't.
    account = new_account()
    await playbooks.alert(account, rule_type=rule)
    [group] = await playbooks.wait_groups(account, 1)
    assert group["playbook_id"] == fresh
    await playbooks.alert(account, rule_type="expansion")  # a later batch goes through
    groups = await playbooks.wait_groups(account, 2)
    assert {g["playbook_id"] for g in groups} == {fresh, "expansion"}

    # (b) REST answers, marking them invalid with each error's field.
    listed = {p["id"]: p for p in await playbooks.get("/v1/playbooks")}
    assert "invalid" not in listed[fresh] and "invalid" not in listed["adoption-risk"]
    assert listed[role]["invalid"] is True and listed[cond]["invalid"] is True
    assert [e["loc"] for e in listed[role]["errors"]] == [["steps", 0, "to", "roles", 0]]
    assert [e["loc"] for e in listed[cond]["errors"]] == [["conditions", 0, "value"]]
    one = await playbooks.get(f"/v1/playbooks/{role}")
    assert one["invalid"] is True and one["definition"] == long_role and one["version"] == 1
    r = await c.get(f"/v1/playbooks/{role}", params={"format": "yaml"})
    assert r.status_code == 200 and yaml.safe_load(r.text) == long_role
    r = await c.post("/v1/task-groups", json={"account_id": account, "playbook_id": cond})
    assert r.status_code == 409 and f"PUT /v1/playbooks/{cond}" in r.json()["detail"]
    assert (await c.get("/v1/stats")).status_code == 200
    assert await playbooks.get("/v1/playbooks", enabled="true")

    warned = [e for e in logs.entries if e["event"] == "playbooks.stored_template_invalid"]
    assert sorted(e["playbook_id"] for e in warned) == sorted([role, cond])  # once each
    [why] = [e["errors"] for e in warned if e["playbook_id"] == cond]
    assert why == [
        {
            "loc": ["conditions", 0, "value"],
            "msg": "gte on mrr needs a number",
            "type": "value_error",
        }
    ]
    assert (REGISTRY.get_sample_value(METRIC) or 0.0) - before == 2
    names = await _exit_event_names(playbooks.database_url)
    assert f"done-{fresh}" in names and f"done-{role}" not in names

    # (c) A PUT with a valid body fixes one; the next alert starts it (the other stays out).
    long_role["steps"][0]["to"]["roles"] = ["r" * 100]
    r = await c.put(f"/v1/playbooks/{role}", json=long_role)
    assert r.status_code == 200, r.text
    assert "invalid" not in r.json() and r.json()["version"] == 2
    fixed = await playbooks.get(f"/v1/playbooks/{role}")
    assert "invalid" not in fixed and "errors" not in fixed and fixed["steps"][0]["to"]
    later = new_account()
    await playbooks.alert(later, rule_type=rule)
    groups = await playbooks.wait_groups(later, 2)
    await playbooks.alert(later, rule_type="expansion")  # marker: the rule's batch is done
    groups = await playbooks.wait_groups(later, 3)
    assert sorted(g["playbook_id"] for g in groups) == sorted([fresh, role, "expansion"])
    assert f"done-{role}" in await _exit_event_names(playbooks.database_url)


def test_every_library_file_validates_under_the_current_rules() -> None:
    files = sorted(LIBRARY_DIR.glob("*.yaml"))
    assert len(files) == 9
    for path in files:
        template = parse_yaml(path.read_text())  # raises TemplateError naming the field
        assert template.id == path.stem, path.name
