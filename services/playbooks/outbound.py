"""The notify request of a due email/Slack step: recipients and template context. Pure.

Recipients are resolved at send time, not at group start, so contacts that arrive after
the trigger (a new account's first ``identify`` calls) still get the welcome email. An
email to contacts reaches its step's audience only (``primary`` unless it says otherwise),
and each recipient carries their own name, email and role: notify renders one copy per
person, so the request's context names nobody.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.playbooks.planning import AccountFacts
from services.playbooks.templates import ADMIN_ROLES, PRIMARY_FALLBACK
from shared.messages import NotifyRequested, Recipient

NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ContactFacts:
    user_id: str
    email: str | None
    name: str | None
    role: str | None
    primary: bool = False
    last_seen_at: datetime | None = None


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
    return [
        Recipient(email=c.email, name=c.name, role=c.role, contact_id=c.user_id)
        for c in audience_of(spec, contacts)
    ]


def _role(contact: ContactFacts) -> str:
    return (contact.role or "").strip().lower()


def audience_of(spec: dict[str, Any], contacts: list[ContactFacts]) -> list[ContactFacts]:
    """The contacts (with an email) an email step reaches, by its stored audience.

    ``roles``: those with one of the roles; ``all``: everyone; ``primary`` (the default,
    also for steps stored before audiences): the primary contacts (trait ``primary`` or
    an admin/owner role), else the :data:`PRIMARY_FALLBACK` most recently seen.
    A legacy ``roles`` list on the recipients spec reads as a roles audience.
    """
    reachable = sorted((c for c in contacts if c.email), key=lambda c: c.user_id)
    audience = spec.get("audience") or (
        {"kind": "roles", "roles": spec["roles"]} if spec.get("roles") else {"kind": "primary"}
    )
    kind = audience.get("kind", "primary")
    if kind == "all":
        return reachable
    if kind == "roles":
        roles = {r.strip().lower() for r in audience.get("roles") or []}
        return [c for c in reachable if _role(c) in roles]
    primary = [c for c in reachable if c.primary or _role(c) in ADMIN_ROLES]
    if primary:
        return primary
    recent = sorted(reachable, key=lambda c: c.last_seen_at or NEVER, reverse=True)
    return sorted(recent[:PRIMARY_FALLBACK], key=lambda c: c.user_id)


def template_context(step: DueStep, account: AccountFacts, csm: CsmFacts | None) -> dict[str, Any]:
    """What the notify template may use; the step's own ``context`` wins on clashes.

    Nothing here names a recipient: notify adds ``recipient.*`` per delivery."""
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
        context=template_context(step, account, csm),
        from_name=csm.name if (step.from_owner and csm) else None,
        reply_to=csm.email if (step.from_owner and csm) else None,
        task_group_id=step.task_group_id,
        step_key=step.step_key,
        automated=True,
    )
