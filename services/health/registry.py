"""The account registry: traits from ``accounts.v1`` and from CS tools (``PUT``).

An owner change is kept with its date (the owner-changed rule reads it) and announced
as ``account.owner_changed`` on ``accounts.v1``. Health ignores its own messages when
it consumes that topic, so nothing loops.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from services.health.models import Account, Contact, OwnerChange
from services.health.outbox import enqueue
from shared import topics
from shared.db import upsert
from shared.envelope import new_id, wrap
from shared.messages import AccountUpserted, ContactUpserted, OwnerChanged
from shared.textfit import clip, email_or_none, fit_key

log = structlog.get_logger(__name__)

SOURCE = "health"
TRAIT_FIELDS = ("name", "plan", "mrr", "owner", "stage", "segment", "renewal_date")
TEXT_MAX = 300  # the width of the text columns a registry message lands in (models.py)
MAX_MRR = 1e12  # beyond this an mrr is a mistake (and severity x mrr must stay finite)


def valid_mrr(value: float) -> bool:
    return math.isfinite(value) and 0 <= value <= MAX_MRR


def new_account(account_id: str, now: datetime) -> Account:
    return Account(account_id=account_id, traits={}, created_at=now, updated_at=now, dirty_at=now)


def _as_utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def apply_traits(
    session: AsyncSession,
    account: Account,
    upserted: AccountUpserted,
    *,
    occurred_at: datetime,
    now: datetime,
) -> dict[str, Any]:
    """Apply the set fields of ``upserted`` unless a newer upsert was applied already.

    Returns the fields that changed. An owner change is recorded and announced.
    """
    occurred_at = _as_utc(occurred_at)
    if account.traits_at is not None and occurred_at < _as_utc(account.traits_at):
        return {}
    changed: dict[str, Any] = {}
    for name in TRAIT_FIELDS:
        value = getattr(upserted, name)
        if name == "owner" and isinstance(value, str):
            value = email_or_none(value)  # too long to be an email: no owner news
            value = value.lower() if value else None
        elif isinstance(value, str):
            value = clip(value, TEXT_MAX)
        if name == "mrr" and value is not None and not valid_mrr(value):
            log.warning("ignoring an invalid mrr", account_id=account.account_id, mrr=value)
            continue
        if value is not None and getattr(account, name) != value:
            changed[name] = value
    if "owner" in changed and account.owner is not None:
        _record_owner_change(session, account, changed["owner"], occurred_at)
    if "stage" in changed and account.stage is not None:
        account.stage_changed_at = occurred_at
    for name, value in changed.items():
        setattr(account, name, value)
    if upserted.traits:
        account.traits = {**(account.traits or {}), **upserted.traits}
    account.traits_at = occurred_at
    if changed:
        account.updated_at = now
        account.dirty_at = now
    return changed


def _record_owner_change(
    session: AsyncSession, account: Account, owner: str, changed_at: datetime
) -> None:
    session.add(
        OwnerChange(
            account_id=account.account_id,
            previous_owner=account.owner,
            owner=owner,
            changed_at=changed_at,
            source=SOURCE,
        )
    )
    message = OwnerChanged(
        message_id=new_id(), previous_owner=account.owner, owner=owner, changed_at=changed_at
    )
    enqueue(
        session,
        topics.ACCOUNTS,
        wrap(
            message,
            type="account.owner_changed",
            account_id=account.account_id,
            source=SOURCE,
            occurred_at=changed_at,
        ),
    )
    account.previous_owner = account.owner
    account.owner_changed_at = changed_at


def announce_upsert(session: AsyncSession, account_id: str, changed: dict[str, Any]) -> None:
    """Tell the other services about a change a CS tool made here (``PUT``)."""
    message = AccountUpserted(message_id=new_id(), **changed)
    enqueue(
        session,
        topics.ACCOUNTS,
        wrap(message, type="account.upserted", account_id=account_id, source=SOURCE),
    )


async def store_contacts(
    session: AsyncSession, contacts: list[tuple[str, ContactUpserted]], now: datetime
) -> None:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for account_id, c in contacts:
        user_id = fit_key(c.user_id, TEXT_MAX)
        rows[(account_id, user_id)] = {
            "account_id": account_id,
            "user_id": user_id,
            "email": email_or_none(c.email),
            "name": clip(c.name, TEXT_MAX),
            "role": clip(c.role, TEXT_MAX),
            "traits": c.traits,
            "updated_at": now,
        }
    await upsert(
        session,
        Contact,
        list(rows.values()),
        keys=["account_id", "user_id"],
        update=["email", "name", "role", "traits", "updated_at"],
    )
