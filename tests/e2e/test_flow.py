"""An account's usage collapses: within seconds an alert, an assigned task group, one
check-in email at the SMTP server and one Slack message to its owner."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from tests.e2e.flows import collapse_history, eventually, get_json, post_calls
from tests.e2e.harness import Running
from tests.support import auth, http_client


async def test_usage_collapse_reaches_the_csm_and_the_customer(running: Running) -> None:
    account = f"e2e-{uuid.uuid4().hex[:8]}"
    owner, contact = f"owner-{account}@uptake.test", f"casey@{account}.test"
    async with http_client(headers=auth("write")) as client:
        r = await client.post(
            f"{running.url('playbooks')}/v1/csms",
            json={"email": owner, "name": "Olive Owner", "slack_id": f"U{account[-8:]}"},
        )
        assert r.status_code in (200, 201), r.text

    await post_calls(running.url("ingest"), collapse_history(account, owner=owner, contact=contact))

    async def alert() -> list[dict[str, Any]]:
        page = await get_json(
            f"{running.url('health')}/v1/alerts", account_id=account, status="open"
        )
        return page["items"]  # type: ignore[no-any-return]

    alerts = await eventually(alert, what="an open alert")
    assert {a["rule_type"] for a in alerts} & {"metric_decline", "band_drop", "score_drop"}

    async def group() -> list[dict[str, Any]]:
        page = await get_json(f"{running.url('playbooks')}/v1/task-groups", account_id=account)
        return page["items"]  # type: ignore[no-any-return]

    groups = await eventually(group, what="a task group")
    assert [g["playbook_id"] for g in groups] == ["adoption-risk"]
    assert groups[0]["assignee"] == owner

    slack_id = f"U{account[-8:]}"

    def to_owner() -> list[dict[str, Any]]:
        return [m for m in running.slack.messages if m.get("channel") == slack_id]

    [email] = await eventually(lambda: running.smtp.to(contact), what="the check-in email")
    await eventually(to_owner, what="the Slack message to the owner")
    # (how fast is bench/e2e.py's to measure: a bound here failed on a slow host at 30.2 s)
    assert email["List-Unsubscribe"] and "One-Click" in email["List-Unsubscribe-Post"]
    await asyncio.sleep(3)  # nothing more arrives: exactly one of each
    assert len(running.smtp.to(contact)) == 1
    assert len(to_owner()) == 1
