"""A churned account's task groups are cancelled: nothing more goes to a customer who left.

Playbooks learns of a churn from ``accounts.v1`` (``account.upserted`` with the trait
``status: churned``, from a ``group`` call or from health's outcomes API) or from health
resolving the account's alerts with the resolution ``churned`` (``health.alerts.v1``).
Either way every open group of the account is cancelled with its open steps, so a
pending email (one still in its review window, say) is never sent.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import select

from services.playbooks import repository
from services.playbooks.flows import GroupStarter
from services.playbooks.models import TaskGroup

log = structlog.get_logger(__name__)

CHURNED = "churned"
REASON = "account churned"


def says_churned(traits: dict[str, Any]) -> bool:
    return traits.get("status") == CHURNED


def resolved_for_churn(details: dict[str, Any]) -> bool:
    return details.get("resolution") == CHURNED


async def cancel_account(starter: GroupStarter, account_id: str) -> int:
    """Cancel the account's open groups (those started earlier in this batch too)."""
    await starter.flush()
    ids = list(
        await starter.session.scalars(
            select(TaskGroup.id).where(
                TaskGroup.account_id == account_id, TaskGroup.status == "open"
            )
        )
    )
    closed = await repository.close_groups(
        starter.session, ids, status="cancelled", reason=REASON, now=starter.now
    )
    for key in [k for k, g in starter.open_groups.items() if g.id in ids]:
        del starter.open_groups[key]
    if closed:
        log.info("playbooks.groups_cancelled", account_id=account_id, count=closed, reason=REASON)
    return closed
