"""``/v1/alerts``: list and filter, acknowledge, snooze, resolve; the daily digest."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from sqlalchemy import func, select

from services.health import repository as repo
from services.health.alerts import publish_change
from services.health.context import health_of
from services.health.models import Alert
from services.health.routes import (
    CONFLICT,
    ERRORS,
    NOT_FOUND,
    IsoDate,
    strict_request,
    unprocessable,
)
from services.health.schemas import AlertList, AlertOut, DigestOut, SnoozeIn
from shared.auth import require_scope

router = APIRouter(
    prefix="/v1/alerts",
    tags=["alerts"],
    responses={**ERRORS, **NOT_FOUND, **CONFLICT},
    dependencies=[Depends(strict_request)],
)
READ = [Depends(require_scope("read"))]
WRITE = [Depends(require_scope("write"))]
Status = Literal["open", "acknowledged", "snoozed", "resolved", "deferred"]


@router.get("", response_model=AlertList, dependencies=READ, summary="List alerts")
async def list_alerts(
    request: Request,
    status: Status | None = None,
    account_id: str | None = None,
    owner: str | None = None,
    rule_id: str | None = None,
    severity: int | None = Query(None, ge=1, le=5, description="at least this severity"),
    opened_since: IsoDate | None = Query(None, description="opened on or after this UTC day"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> AlertList:
    query = repo.alerts_query(
        status=status,
        account_id=account_id,
        owner=owner,
        rule_id=rule_id,
        severity=severity,
        opened_since=opened_since,
    )
    async with health_of(request).sessions() as session:
        total = await session.scalar(select(func.count()).select_from(query.subquery()))
        rows = await session.scalars(query.limit(limit).offset(offset))
        return AlertList(total=total or 0, items=[AlertOut.model_validate(a) for a in rows])


@router.get("/digest", response_model=DigestOut, dependencies=READ)
async def digest(request: Request, day: IsoDate | None = None) -> DigestOut:
    """Alerts deferred on ``day`` (default today) because their CSM's budget was spent."""
    day = day or datetime.now(UTC).date()
    async with health_of(request).sessions() as session:
        rows = await repo.deferred_alerts(session, day)
    owners: dict[str, list[AlertOut]] = defaultdict(list)
    for alert in rows:
        owners[alert.owner or "unassigned"].append(AlertOut.model_validate(alert))
    return DigestOut(day=day, owners=dict(owners))


@router.get("/{alert_id}", response_model=AlertOut, dependencies=READ)
async def get_alert(request: Request, alert_id: str) -> AlertOut:
    async with health_of(request).sessions() as session:
        alert = await session.get(Alert, alert_id)
        if alert is None:
            raise HTTPException(404, detail=f"alert '{alert_id}' not found")
        return AlertOut.model_validate(alert)


async def _transition(
    request: Request, alert_id: str, status: str, *, snoozed_until: datetime | None = None
) -> AlertOut:
    ctx = health_of(request)
    now = datetime.now(UTC)
    async with ctx.sessions() as session, session.begin():
        alert = await session.get(Alert, alert_id, with_for_update=True)
        if alert is None:
            raise HTTPException(404, detail=f"alert '{alert_id}' not found")
        if alert.status == "resolved":
            raise HTTPException(409, detail="alert is resolved")
        alert.status = status
        alert.updated_at = now
        alert.snoozed_until = snoozed_until
        if status == "acknowledged":
            alert.acknowledged_at = now
        if status == "resolved":
            alert.resolved_at, alert.resolved_by = now, "user"
        if not alert.published and status != "resolved":
            alert.published = True  # a person picked it out of the digest
            publish_change(session, alert, "alert.opened")
        elif alert.published:
            publish_change(
                session, alert, "alert.resolved" if status == "resolved" else "alert.updated"
            )
    ctx.outbox.nudge()
    return AlertOut.model_validate(alert)


@router.post("/{alert_id}/ack", response_model=AlertOut, dependencies=WRITE)
async def acknowledge(request: Request, alert_id: str) -> AlertOut:
    return await _transition(request, alert_id, "acknowledged")


@router.post("/{alert_id}/snooze", response_model=AlertOut, dependencies=WRITE)
async def snooze(request: Request, alert_id: str, body: SnoozeIn) -> AlertOut:
    """Quiet until a time (``until``) or for ``days``; it re-opens then if still true."""
    now = datetime.now(UTC)
    if body.until is not None:
        until = body.until if body.until.tzinfo else body.until.replace(tzinfo=UTC)
    elif body.days is not None:
        until = now + timedelta(days=body.days)
    else:
        raise unprocessable(["body"], "snooze needs 'until' or 'days'")
    if until <= now:
        raise unprocessable(["body", "until"], "must be in the future")
    return await _transition(request, alert_id, "snoozed", snoozed_until=until)


@router.post("/{alert_id}/resolve", response_model=AlertOut, dependencies=WRITE)
async def resolve(request: Request, alert_id: str) -> AlertOut:
    """Close by hand; the rule's cool-down then keeps it from re-opening at once."""
    return await _transition(request, alert_id, "resolved")
