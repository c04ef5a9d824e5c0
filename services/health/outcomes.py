"""Outcomes: what became of an account (churned, renewed, downgraded, upgraded, reactivated).

They arrive as ``group`` traits on ``accounts.v1`` (``status`` active|churned,
``churned_at``, ``churn_reason``) or over ``POST /v1/accounts/{id}/outcomes``, and are
kept with their history (one row per account, type and day, so a replay or a second
report changes nothing). The account's ``status`` follows its latest churn or
reactivation. A churned account, from its churn day on, is neither scored nor alerted
and leaves its segment's medians (:mod:`recompute`); its open alerts are resolved with
the resolution ``churned`` (playbooks then cancels what is left of its task groups).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.health import repository as repo
from services.health.alerts import publish_change
from services.health.models import Account, Alert, Outcome
from services.health.outbox import enqueue
from shared import topics
from shared.envelope import new_id, wrap
from shared.messages import AccountUpserted

log = structlog.get_logger(__name__)

OutcomeType = Literal["churned", "renewed", "downgraded", "upgraded", "reactivated"]
OUTCOME_TYPES: tuple[OutcomeType, ...] = (
    "churned",
    "renewed",
    "downgraded",
    "upgraded",
    "reactivated",
)
STATUS_TYPES = ("churned", "reactivated")  # the outcomes that set the account's status
CHURNED = "churned"
REASON_MAX = 500


@dataclass(frozen=True)
class OutcomeFact:
    type: OutcomeType
    at: date
    reason: str | None = None


def _day(value: Any) -> date | None:
    """A trait's date: ``YYYY-MM-DD`` or an ISO timestamp (its date part)."""
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value.strip()[:10])
    except ValueError:
        return None


def from_traits(account: Account, traits: dict[str, Any], day: date) -> OutcomeFact | None:
    """The outcome a ``group`` call's traits say (``day``: when the call happened), if any.

    Repeating ``status: churned`` without a date, or ``active`` on an active account, is
    no news (Segment resends the traits on every group call)."""
    status = traits.get("status")
    if status == "churned":
        at = _day(traits.get("churned_at"))
        if "churned_at" in traits and at is None:
            log.warning("ignoring an invalid churned_at", account_id=account.account_id)
        if at is None:
            if account.status == CHURNED:
                return None
            at = day
        reason = traits.get("churn_reason")
        reason = str(reason)[:REASON_MAX] if reason not in (None, "") else None
        return OutcomeFact("churned", at, reason)
    if status == "active" and account.status == CHURNED:
        if account.churned_at is not None and day < account.churned_at:
            return None  # older than the churn it would undo
        return OutcomeFact("reactivated", day)
    return None


async def record(
    session: AsyncSession,
    account: Account,
    fact: OutcomeFact,
    *,
    source: str,
    now: datetime,
    today: date,
) -> tuple[Outcome, bool]:
    """Store the outcome (once) and bring the account's status in line; returns the row
    and whether it is new. A churn effective by ``today`` resolves the account's alerts."""
    row = await session.scalar(
        select(Outcome).where(
            Outcome.account_id == account.account_id,
            Outcome.type == fact.type,
            Outcome.at == fact.at,
        )
    )
    if row is not None:
        return row, False
    row = Outcome(
        account_id=account.account_id,
        type=fact.type,
        at=fact.at,
        reason=fact.reason,
        source=source,
        mrr=account.mrr,
        plan=account.plan,
        segment=account.segment,
        recorded_at=now,
    )
    session.add(row)
    await session.flush()
    if fact.type in STATUS_TYPES:
        await refresh_status(session, account)
        account.dirty_at = now
        account.updated_at = now
        if account.status == CHURNED and account.churned_at and account.churned_at <= today:
            await resolve_churned(session, [account.account_id], now)
    return row, True


async def refresh_status(session: AsyncSession, account: Account) -> None:
    """``status``/``churned_at``/``churn_reason`` from the latest churn or reactivation
    (by day; the same day: the one recorded last)."""
    latest = await session.scalar(
        select(Outcome)
        .where(Outcome.account_id == account.account_id, Outcome.type.in_(STATUS_TYPES))
        .order_by(Outcome.at.desc(), Outcome.id.desc())
        .limit(1)
    )
    if latest is None or latest.type != CHURNED:
        account.status = None
        return
    account.status = CHURNED
    account.churned_at = latest.at
    account.churn_reason = latest.reason


async def resolve_churned(session: AsyncSession, account_ids: list[str], now: datetime) -> int:
    """Resolve the accounts' not-resolved alerts with the resolution ``churned``; the
    published ones go out as ``alert.resolved`` (``details.resolution`` says why)."""
    alerts = await repo.active_alerts(session, account_ids)
    for alert in alerts:
        resolve_alert(session, alert, now)
    return len(alerts)


def resolve_alert(session: AsyncSession, alert: Alert, now: datetime) -> None:
    alert.status = "resolved"
    alert.resolved_at = now
    alert.resolved_by = CHURNED
    alert.updated_at = now
    alert.details = {**(alert.details or {}), "resolution": CHURNED}
    if alert.published:
        publish_change(session, alert, "alert.resolved")


def announce(session: AsyncSession, account: Account) -> None:
    """Tell the other services (playbooks) the account's status after a REST outcome."""
    if account.status == CHURNED:
        traits: dict[str, Any] = {
            "status": CHURNED,
            "churned_at": account.churned_at.isoformat() if account.churned_at else None,
            "churn_reason": account.churn_reason,
        }
    else:
        traits = {"status": "active"}
    message = AccountUpserted(message_id=new_id(), traits=traits)
    enqueue(
        session,
        topics.ACCOUNTS,
        wrap(message, type="account.upserted", account_id=account.account_id, source="health"),
    )


def churned_as_of(rows: list[tuple[str, str, date, int]], day: date) -> set[str]:
    """Accounts whose latest churn/reactivation on or before ``day`` is a churn.
    ``rows``: (account, type, at, id) of churn and reactivation outcomes."""
    latest: dict[str, tuple[date, int, str]] = {}
    for account_id, kind, at, row_id in rows:
        if at > day:
            continue
        seen = latest.get(account_id)
        if seen is None or (at, row_id) > seen[:2]:
            latest[account_id] = (at, row_id, kind)
    return {a for a, (_, _, kind) in latest.items() if kind == CHURNED}


def summary(rows: list[Outcome], since: date, until: date) -> dict[str, Any]:
    """Churn counted by reason, segment and plan with the MRR lost (each account's MRR
    when it churned), plus counts of the other outcomes. A churn followed by a
    reactivation of the same account is counted as won back, not as lost."""
    reactivations: dict[str, list[date]] = defaultdict(list)
    for row in rows:
        if row.type == "reactivated":
            reactivations[row.account_id].append(row.at)
    counts: dict[str, int] = {t: 0 for t in OUTCOME_TYPES}
    lost: list[Outcome] = []
    won_back = 0
    for row in rows:
        if not since <= row.at <= until:
            continue
        counts[row.type] += 1
        if row.type != CHURNED:
            continue
        if any(at >= row.at for at in reactivations.get(row.account_id, [])):
            won_back += 1
        else:
            lost.append(row)

    def by(attr: str) -> list[dict[str, Any]]:
        groups: dict[str, list[Outcome]] = defaultdict(list)
        for row in lost:
            groups[getattr(row, attr) or "unknown"].append(row)
        out = [
            {attr: key, "accounts": len(g), "mrr_lost": round(sum(r.mrr or 0.0 for r in g), 2)}
            for key, g in groups.items()
        ]
        return sorted(out, key=lambda e: (-e["accounts"], -e["mrr_lost"], e[attr]))

    return {
        "since": since,
        "until": until,
        "churned": len(lost),
        "won_back": won_back,
        "mrr_lost": round(sum(r.mrr or 0.0 for r in lost), 2),
        "by_reason": by("reason"),
        "by_segment": by("segment"),
        "by_plan": by("plan"),
        "counts": counts,
    }
