"""``/v1/accounts/{id}/outcomes`` (record, list) and ``/v1/outcomes/summary`` (churn counted)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from services.health import repository as repo
from services.health.context import health_of
from services.health.models import Account
from services.health.outcomes import OutcomeFact, announce, record, summary
from services.health.routes import ERRORS, NOT_FOUND, IsoDate, strict_request, unprocessable
from services.health.schemas import OutcomeIn, OutcomeList, OutcomeOut, OutcomeSummary
from shared.auth import require_scope

router = APIRouter(
    prefix="/v1",
    tags=["outcomes"],
    responses={**ERRORS, **NOT_FOUND},
    dependencies=[Depends(strict_request)],
)
READ = [Depends(require_scope("read"))]
WRITE = [Depends(require_scope("write"))]
AHEAD_DAYS = 366  # a churn or renewal may be recorded ahead (the contract's end), not further


@router.post(
    "/accounts/{account_id}/outcomes",
    response_model=OutcomeOut,
    status_code=201,
    dependencies=WRITE,
    responses={200: {"description": "the same outcome was recorded already"}},
)
async def record_outcome(
    request: Request, response: Response, account_id: str, body: OutcomeIn
) -> OutcomeOut:
    """Record a churn, renewal, downgrade, upgrade or reactivation (``active``). A churn
    stops scoring and alerting the account from ``at`` on and resolves its alerts."""
    ctx = health_of(request)
    today = ctx.settings.today()
    if body.at > today + timedelta(days=AHEAD_DAYS):
        raise unprocessable(["body", "at"], f"must be within {AHEAD_DAYS} days of today")
    now = datetime.now(UTC)
    kind = "reactivated" if body.type == "active" else body.type
    async with ctx.sessions() as session, session.begin():
        account = await session.get(Account, account_id, with_for_update=True)
        if account is None:
            raise HTTPException(404, detail=f"account '{account_id}' not found")
        before = (account.status, account.churned_at)
        row, new = await record(
            session,
            account,
            OutcomeFact(kind, body.at, body.reason),
            source="api",
            now=now,
            today=today,
        )
        if (account.status, account.churned_at) != before:
            announce(session, account)
    if not new:
        response.status_code = 200
    ctx.outbox.nudge()
    ctx.scheduler.nudge()
    return OutcomeOut.model_validate(row)


@router.get("/accounts/{account_id}/outcomes", response_model=OutcomeList, dependencies=READ)
async def list_outcomes(request: Request, account_id: str) -> OutcomeList:
    """Every outcome of the account, newest first, and its status now."""
    async with health_of(request).sessions() as session:
        account = await session.get(Account, account_id)
        if account is None:
            raise HTTPException(404, detail=f"account '{account_id}' not found")
        rows = await repo.outcomes_of(session, account_id)
    return OutcomeList(
        account_id=account_id,
        status="churned" if account.status == "churned" else "active",
        churned_at=account.churned_at if account.status == "churned" else None,
        items=[OutcomeOut.model_validate(r) for r in rows],
    )


@router.get("/outcomes/summary", response_model=OutcomeSummary, dependencies=READ)
async def outcomes_summary(request: Request, since: IsoDate | None = None) -> OutcomeSummary:
    """Churn since ``since`` (default: 90 days before today) by reason, segment and plan,
    with the MRR lost; counts of every outcome type."""
    ctx = health_of(request)
    today = ctx.settings.today()
    since = since or today - timedelta(days=90)
    if since > today:
        raise unprocessable(["query", "since"], f"must not be after today ({today})")
    async with ctx.sessions() as session:
        rows = await repo.outcomes_since(session, since)
    return OutcomeSummary.model_validate(summary(rows, since, today))
