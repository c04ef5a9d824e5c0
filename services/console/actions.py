"""The buttons: each posts a CSRF-checked form and becomes one call to a service's API.

A read-only token never sees these buttons, and the console refuses the post (403) before
calling anything; the services would refuse it too.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.console.api import ApiError, seg
from services.console.pages import rule_page
from services.console.sessions import Session
from services.console.web import acting, back_to, console_of, form_of, refuse, signed_in

router = APIRouter(include_in_schema=False)


async def _told(
    request: Request,
    session: Session,
    fields: dict[str, str],
    call: Awaitable[Any],
    done: str,
    failed: str = "Not done",
) -> Response:
    """Back to the form's page, saying how the call went (a refused token is raised: it
    ends in the sign-in page, not in a message)."""
    try:
        await call
    except ApiError as exc:
        if exc.status in (401, 403):
            raise
        return back_to(request, session, fields, f"{failed}: {exc.detail}")
    return back_to(request, session, fields, done)


async def _do(
    request: Request, service: str, path: str, body: Any, done: str, *, scope: str = "write"
) -> Response:
    session, fields = await acting(request, scope)
    call = console_of(request).api.post(session.token or "", service, path, body)
    return await _told(request, session, fields, call, done)


@router.post("/alerts/{alert_id}/ack")
async def ack(request: Request, alert_id: str) -> Response:
    return await _do(
        request, "health", f"/v1/alerts/{seg(alert_id)}/ack", None, "Alert acknowledged."
    )


@router.post("/alerts/{alert_id}/resolve")
async def resolve(request: Request, alert_id: str) -> Response:
    return await _do(
        request, "health", f"/v1/alerts/{seg(alert_id)}/resolve", None, "Alert resolved."
    )


@router.post("/alerts/{alert_id}/snooze")
async def snooze(request: Request, alert_id: str) -> Response:
    _, fields = await form_of(request)
    try:
        days = float(fields.get("days") or 7)
    except ValueError:
        refuse("snooze days must be a number", 422)
    return await _do(
        request,
        "health",
        f"/v1/alerts/{seg(alert_id)}/snooze",
        {"days": days},
        f"Alert snoozed for {days:g} days.",
    )


def _note(fields: dict[str, str], author: str | None) -> dict[str, Any] | None:
    note = fields.get("note", "").strip()
    return {"note": note, "author": author} if note else None


@router.post("/tasks/{task_id}/complete")
async def complete(request: Request, task_id: str) -> Response:
    session, fields = await acting(request)
    return await _do(
        request, "playbooks", f"/v1/tasks/{seg(task_id)}/complete",
        _note(fields, session.subject), "Task completed.",
    )  # fmt: skip


@router.post("/tasks/{task_id}/skip")
async def skip(request: Request, task_id: str) -> Response:
    """Skipping an automated step before it is sent cancels the send."""
    session, fields = await acting(request)
    what = "Send cancelled." if fields.get("cancel_send") else "Task skipped."
    return await _do(
        request, "playbooks", f"/v1/tasks/{seg(task_id)}/skip", _note(fields, session.subject), what
    )


@router.post("/tasks/{task_id}/comment")
async def comment(request: Request, task_id: str) -> Response:
    session, fields = await acting(request)
    body = fields.get("body", "").strip()
    if not body:
        return back_to(request, session, fields, "A comment needs some text.")
    return await _do(
        request, "playbooks", f"/v1/tasks/{seg(task_id)}/comments",
        {"body": body, "author": session.subject or "console"}, "Comment added.",
    )  # fmt: skip


@router.post("/tasks/{task_id}/reassign")
async def reassign(request: Request, task_id: str) -> Response:
    _, fields = await acting(request)
    to = fields.get("assignee", "").strip() or None
    return await _do(
        request, "playbooks", f"/v1/tasks/{seg(task_id)}/reassign", {"assignee": to},
        f"Task reassigned to {to or 'the unassigned queue'}.",
    )  # fmt: skip


@router.post("/rules/{rule_id}/backtest")
async def backtest(request: Request, rule_id: str) -> Response:
    """Preview: what the edited params would have raised, beside the current ones."""
    _, fields = await form_of(request)
    signed_in(request)
    text = fields.get("params", "")
    cooldown, error, params = _edits(fields)
    return await rule_page(
        request, rule_id, edited=params, edited_text=text, cooldown=cooldown, error=error
    )


def _edits(fields: dict[str, str]) -> tuple[int | None, str | None, dict[str, Any] | None]:
    try:
        params = json.loads(fields.get("params", "") or "{}")
    except ValueError as exc:
        return None, f"params are not JSON: {exc}", None
    if not isinstance(params, dict):
        return None, "params must be a JSON object", None
    try:
        cooldown = int(fields["cooldown_days"]) if fields.get("cooldown_days") else None
    except ValueError:
        return None, "cool-down must be a whole number of days", params
    return cooldown, None, params


async def _put_rule(request: Request, rule_id: str, changes: dict[str, Any]) -> Response:
    session, fields = await acting(request, "admin")
    api, token = console_of(request).api, session.token or ""
    rule = await api.get(token, "health", f"/v1/alert-rules/{seg(rule_id)}")
    keep = ("type", "name", "enabled", "severity", "cooldown_days", "params")
    body = {**{k: rule[k] for k in keep}, **changes}
    call = api.put(token, "health", f"/v1/alert-rules/{seg(rule_id)}", body)
    return await _told(request, session, fields, call, f"Rule {rule['name']!r} saved.", "Not saved")


@router.post("/rules/{rule_id}/save")
async def save_rule(request: Request, rule_id: str) -> Response:
    _, fields = await acting(request, "admin")
    cooldown, error, params = _edits(fields)
    if error is not None:
        return await rule_page(
            request, rule_id, edited={}, edited_text=fields.get("params"), error=error
        )
    changes: dict[str, Any] = {"params": params}
    if cooldown is not None:
        changes["cooldown_days"] = cooldown
    return await _put_rule(request, rule_id, changes)


@router.post("/rules/{rule_id}/toggle")
async def toggle_rule(request: Request, rule_id: str) -> Response:
    _, fields = await acting(request, "admin")
    return await _put_rule(request, rule_id, {"enabled": fields.get("enabled") == "true"})


PLAYBOOK_FIELDS = (
    "id", "name", "description", "phase", "enabled", "triggers", "conditions", "assignee",
    "steps", "exit",
)  # fmt: skip


@router.post("/playbooks/{playbook_id}/toggle")
async def toggle_playbook(request: Request, playbook_id: str) -> Response:
    session, fields = await acting(request, "admin")
    api, token = console_of(request).api, session.token or ""
    current = await api.get(token, "playbooks", f"/v1/playbooks/{seg(playbook_id)}")
    if current.get("invalid"):
        return back_to(request, session, fields, "That playbook is invalid: fix it by its API.")
    body = {k: current[k] for k in PLAYBOOK_FIELDS if k in current}
    body["enabled"] = fields.get("enabled") == "true"
    call = api.put(token, "playbooks", f"/v1/playbooks/{seg(playbook_id)}", body)
    done = f"Playbook {current['name']!r} switched {'on' if body['enabled'] else 'off'}."
    return await _told(request, session, fields, call, done, "Not saved")
