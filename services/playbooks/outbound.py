"""The notify request of a due email/Slack step: recipients and template context. Pure.

Recipients are resolved at send time, not at group start, so contacts that arrive after
the trigger (a new account's first ``identify`` calls) still get the welcome email.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.playbooks.planning import AccountFacts
from shared.messages import NotifyRequested, Recipient


@dataclass(frozen=True, slots=True)
class ContactFacts:
    user_id: str
    email: str | None
    name: str | None
    role: str | None


@dataclass(frozen=True, slots=True)
class CsmFacts:
    email: str
    name: str
    slack_id: str | None


@dataclass(frozen=True, slots=True)
class DueStep:
    task_group_id: str
    step_key: str
    type: str  # email or slack
    title: str
    template_id: str
    recipients: dict[str, Any] | None  # a templates.Recipients as JSON
    from_owner: bool
    step_context: dict[str, Any]
    group_context: dict[str, Any]
    playbook_id: str
    playbook_name: str

    @property
    def idempotency_key(self) -> str:
        return f"{self.task_group_id}:{self.step_key}"


def recipients_for(
    step: DueStep,
    contacts: list[ContactFacts],
    csm: CsmFacts | None,
    *,
    default_slack_channel: str | None,
) -> list[Recipient]:
    spec = step.recipients or {"kind": "contacts" if step.type == "email" else "owner"}
    kind = spec.get("kind", "contacts")
    if kind == "channel":
        return [Recipient(slack_channel=spec["channel"])]
    if kind == "owner":
        if step.type == "slack":
            channel = (csm.slack_id if csm else None) or default_slack_channel
            return (
                [Recipient(slack_channel=channel, name=csm.name if csm else None)]
                if channel
                else []
            )
        return [Recipient(email=csm.email, name=csm.name)] if csm else []
    roles = {r.lower() for r in spec.get("roles") or []}
    return [
        Recipient(email=c.email, name=c.name, contact_id=c.user_id)
        for c in sorted(contacts, key=lambda c: c.user_id)
        if c.email and (not roles or (c.role or "").lower() in roles)
    ]


def template_context(
    step: DueStep, account: AccountFacts, to: list[Recipient], csm: CsmFacts | None
) -> dict[str, Any]:
    """What the notify template may use; the step's own ``context`` wins on clashes."""
    first = to[0] if to else None
    account_ctx = {
        "id": account.account_id,
        "name": account.name or account.account_id,
        "plan": account.plan,
        "mrr": account.mrr,
        "stage": account.stage,
        "segment": account.segment,
        "renewal_date": account.renewal_date.isoformat() if account.renewal_date else None,
    }
    csm_ctx = {"name": csm.name, "email": csm.email, "slack_id": csm.slack_id} if csm else None
    alert = step.group_context.get("alert") or {}
    details = alert.get("details") or {}
    return {
        "account": account_ctx,
        "account_name": account_ctx["name"],
        "contact_name": first.name if first and first.contact_id else None,
        "contact": {"name": first.name, "email": first.email}
        if first and first.contact_id
        else None,
        "csm": csm_ctx,
        "csm_name": csm.name if csm else None,
        "csm_email": csm.email if csm else None,
        "playbook": {"id": step.playbook_id, "name": step.playbook_name},
        "playbook_name": step.playbook_name,
        # Flat alert fields, as notify's built-in templates use them.
        "alert_title": alert.get("title"),
        "reason": alert.get("reason"),
        "severity": alert.get("severity"),
        "rule_type": alert.get("rule_type"),
        "score": details.get("score"),
        "band": details.get("band"),
        "step": {"key": step.step_key, "title": step.title},
        "task_group_id": step.task_group_id,
        **step.group_context,
        **step.step_context,
    }


def build_request(
    step: DueStep,
    account: AccountFacts,
    contacts: list[ContactFacts],
    csm: CsmFacts | None,
    *,
    default_slack_channel: str | None,
) -> NotifyRequested | None:
    """The request to publish, or None when nobody can receive it yet."""
    to = recipients_for(step, contacts, csm, default_slack_channel=default_slack_channel)
    if not to:
        return None
    return NotifyRequested(
        idempotency_key=step.idempotency_key,
        channel="slack" if step.type == "slack" else "email",
        template_id=step.template_id,
        to=to,
        context=template_context(step, account, to, csm),
        from_name=csm.name if (step.from_owner and csm) else None,
        reply_to=csm.email if (step.from_owner and csm) else None,
        task_group_id=step.task_group_id,
        step_key=step.step_key,
        automated=True,
    )
