"""Alert lifecycle: open, keep, re-open after snooze, auto-resolve, budget-defer.

Given which accounts each rule's condition holds for (from :mod:`rules`), bring the
stored alerts in line: one not-resolved alert per (account, rule), none re-opened
within the rule's cool-down, at most N new alerts per CSM per day (the lowest
priority beyond it wait in the daily digest). Changes go out through the outbox.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from services.health import repository as repo
from services.health.models import Account, Alert, AlertRule
from services.health.outbox import enqueue
from services.health.registry import MAX_MRR
from services.health.rules import Hit
from shared import topics
from shared.envelope import wrap
from shared.messages import AlertChanged

ALERT_NAMESPACE = uuid.UUID("6f1c1c3e-8a43-4c1e-9a55-4b5f0e1d2c3b")
ChangeType = Literal["alert.opened", "alert.updated", "alert.resolved"]


def alert_id(account_id: str, rule_id: str, seq: int) -> str:
    """Stable: the n-th alert of a rule for an account always has the same id."""
    return uuid.uuid5(ALERT_NAMESPACE, f"{account_id}|{rule_id}|{seq}").hex


def priority(severity: int, mrr: float | None) -> float:
    usable = mrr if mrr is not None and math.isfinite(mrr) else 0.0
    return float(severity) * min(max(usable, 1.0), MAX_MRR)


def publish_change(session: AsyncSession, alert: Alert, change: ChangeType) -> None:
    message = AlertChanged(
        alert_id=alert.id,
        rule_id=alert.rule_id,
        rule_type=alert.rule_type,
        status=alert.status,
        severity=alert.severity,
        priority=alert.priority,
        owner=alert.owner,
        title=alert.title,
        reason=alert.reason,
        details=alert.details,
        opened_at=alert.opened_at,
        resolved_at=alert.resolved_at,
    )
    env = wrap(message, type=change, account_id=alert.account_id, source="health")
    enqueue(session, topics.HEALTH_ALERTS, env)


async def reassign(session: AsyncSession, owners: dict[str, str], now: datetime) -> int:
    """The account's CSM changed: its not-resolved alerts follow (``?owner=``, budget,
    digest); the published ones are announced as ``alert.updated``. Returns how many."""
    moved = 0
    for alert in await repo.active_alerts(session, list(owners)):
        owner = owners[alert.account_id]
        if alert.owner == owner:
            continue
        alert.owner, alert.updated_at = owner, now
        moved += 1
        if alert.published:
            publish_change(session, alert, "alert.updated")
    return moved


@dataclass
class Candidate:
    rule: AlertRule
    account: Account
    hit: Hit
    seq: int
    waiting: Alert | None = None  # a deferred alert competing for today's budget again

    @property
    def priority(self) -> float:
        return priority(self.rule.severity, self.account.mrr)


def _resolve(session: AsyncSession, alert: Alert, now: datetime, by: str) -> None:
    alert.status = "resolved"
    alert.resolved_at = now
    alert.resolved_by = by
    alert.updated_at = now
    if alert.published:
        publish_change(session, alert, "alert.resolved")


def _refresh(session: AsyncSession, alert: Alert, rule: AlertRule, hit: Hit, now: datetime) -> None:
    """The condition still holds: keep the alert, wake it when its snooze is over."""
    changed = False
    if alert.reason != hit.reason or alert.details != hit.details:
        alert.reason, alert.details = hit.reason, hit.details
        alert.updated_at = now
    if alert.severity != rule.severity:
        alert.severity = rule.severity
        changed = True
    snoozed_until = alert.snoozed_until
    if snoozed_until is not None and snoozed_until.tzinfo is None:
        snoozed_until = snoozed_until.replace(tzinfo=UTC)
    if alert.status == "snoozed" and snoozed_until is not None and snoozed_until <= now:
        alert.status, alert.snoozed_until = "open", None
        changed = True
    if changed:
        alert.updated_at = now
        if alert.published:
            publish_change(session, alert, "alert.updated")


def _open(
    session: AsyncSession, c: Candidate, now: datetime, *, deferred_day: date | None
) -> Alert:
    account = c.account
    alert = Alert(
        id=alert_id(account.account_id, c.rule.id, c.seq),
        account_id=account.account_id,
        rule_id=c.rule.id,
        rule_type=c.rule.type,
        seq=c.seq,
        status="deferred" if deferred_day else "open",
        severity=c.rule.severity,
        priority=c.priority,
        owner=account.owner,
        title=f"{c.rule.name}: {account.name or account.account_id}"[:300],
        reason=c.hit.reason,
        details=c.hit.details,
        published=deferred_day is None,
        opened_at=now,
        updated_at=now,
        deferred_day=deferred_day,
    )
    session.add(alert)
    if deferred_day is None:
        publish_change(session, alert, "alert.opened")
    return alert


def _promote(session: AsyncSession, alert: Alert, now: datetime) -> None:
    """A deferred alert whose condition still holds gets the budget freed since."""
    alert.status, alert.published, alert.deferred_day = "open", True, None
    alert.opened_at = alert.updated_at = now
    publish_change(session, alert, "alert.opened")


async def reconcile(
    session: AsyncSession,
    *,
    rules: list[AlertRule],
    hits: dict[str, list[Hit]],
    account_ids: list[str],
    accounts: dict[str, Account],
    now: datetime,
    budget: int,
    held: set[str] | frozenset[str] = frozenset(),
) -> dict[str, int]:
    """Bring alerts of ``account_ids`` in line with the rules' current hits (per rule id).

    The alerts of ``held`` accounts (data not settled yet: :mod:`settle`) are left as they
    are: none opens, changes or resolves on data that may still be incomplete."""
    counts = {"opened": 0, "deferred": 0, "resolved": 0}
    by_rule = {r.id: r for r in rules}
    judged = [a for a in account_ids if a not in held]
    holding = {
        (account_ids[h.index], rule_id): h
        for rule_id, found in hits.items()
        for h in found
        if account_ids[h.index] not in held
    }
    active = {(a.account_id, a.rule_id): a for a in await repo.active_alerts(session, judged)}
    waiting: list[Candidate] = []
    for key, alert in active.items():
        rule = by_rule.get(alert.rule_id)
        if rule is None:
            continue  # rule disabled or deleted: leave its alerts to people
        if key in holding:
            _refresh(session, alert, rule, holding[key], now)
            if alert.status == "deferred":
                hit = holding[key]
                waiting.append(Candidate(rule, accounts[alert.account_id], hit, alert.seq, alert))
        else:
            _resolve(session, alert, now, "auto")
            counts["resolved"] += 1
    history = await repo.alert_history(session, judged)
    candidates: list[Candidate] = []
    for (account_id, rule_id), hit in holding.items():
        if (account_id, rule_id) in active:
            continue
        rule = by_rule[rule_id]
        seen, last_resolved = history.get((account_id, rule_id), (0, None))
        if last_resolved is not None:
            if last_resolved.tzinfo is None:
                last_resolved = last_resolved.replace(tzinfo=UTC)
            if now - last_resolved < timedelta(days=rule.cooldown_days):
                continue
        candidates.append(Candidate(rule, accounts[account_id], hit, seen + 1))
    await _open_within_budget(session, candidates + waiting, now, budget, counts)
    return counts


async def _open_within_budget(
    session: AsyncSession,
    candidates: list[Candidate],
    now: datetime,
    budget: int,
    counts: dict[str, int],
) -> None:
    """Highest priority first; past an owner's daily budget, alerts wait in the digest."""
    today = now.date()
    spent = await repo.opened_on_by_owner(session, datetime.combine(today, time(), tzinfo=UTC))
    candidates.sort(key=lambda c: (-c.priority, c.account.account_id, c.rule.id))
    for c in candidates:
        owner = c.account.owner
        if spent.get(owner, 0) < budget:
            spent[owner] = spent.get(owner, 0) + 1
            if c.waiting is not None:
                _promote(session, c.waiting, now)
            else:
                _open(session, c, now, deferred_day=None)
            counts["opened"] += 1
        elif c.waiting is None:
            _open(session, c, now, deferred_day=today)
            counts["deferred"] += 1
