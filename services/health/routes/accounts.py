"""``/v1/accounts``: the registry with current health, score history, daily metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from sqlalchemy import func, select

from services.health import repository as repo
from services.health.alerts import reassign
from services.health.context import health_of
from services.health.models import Account, Score
from services.health.registry import announce_upsert, apply_traits, new_account
from services.health.routes import ERRORS, NOT_FOUND, IsoDate, strict_request, unprocessable
from services.health.schemas import (
    AccountList,
    AccountOut,
    AccountUpdate,
    ContactOut,
    MetricSeries,
    MetricsOut,
    ScoreOut,
    ScorePoint,
)
from shared.auth import require_scope
from shared.envelope import new_id
from shared.messages import AccountUpserted

router = APIRouter(
    prefix="/v1/accounts",
    tags=["accounts"],
    responses={**ERRORS, **NOT_FOUND},
    dependencies=[Depends(strict_request)],
)
READ = [Depends(require_scope("read"))]
WRITE = [Depends(require_scope("write"))]
Sort = Literal[
    "score", "-score", "change", "-change", "account_id", "-account_id",
    "name", "-name", "mrr", "-mrr", "owner", "-owner", "stage", "-stage",
    "segment", "-segment", "renewal_date", "-renewal_date", "alerts", "-alerts",
]  # fmt: skip


def _out(account: Account, score: Score | None) -> AccountOut:
    out = AccountOut.model_validate(account)
    if score is not None:
        out.health = ScoreOut.model_validate(score, from_attributes=True)
    return out


@router.get("", response_model=AccountList, dependencies=READ, summary="List accounts")
async def list_accounts(
    request: Request,
    band: Literal["green", "yellow", "red"] | None = None,
    owner: str | None = None,
    segment: str | None = None,
    stage: str | None = None,
    sort: Sort = Query(
        "account_id", description="ascending; '-' = descending; alerts = open alerts"
    ),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> AccountList:
    query = repo.accounts_query(band=band, owner=owner, segment=segment, stage=stage, sort=sort)
    async with health_of(request).sessions() as session:
        total = await session.scalar(select(func.count()).select_from(query.subquery()))
        rows = (await session.execute(query.limit(limit).offset(offset))).all()
        return AccountList(total=total or 0, items=[_out(row[0], row[1]) for row in rows])


async def _account(request: Request, account_id: str) -> tuple[Account, Score | None]:
    async with health_of(request).sessions() as session:
        account = await session.get(Account, account_id)
        if account is None:
            raise HTTPException(404, detail=f"account '{account_id}' not found")
        return account, await session.get(Score, account_id)


@router.get("/{account_id}", response_model=AccountOut, dependencies=READ)
async def get_account(request: Request, account_id: str) -> AccountOut:
    """Traits, current score and its components, contacts."""
    out = _out(*await _account(request, account_id))
    async with health_of(request).sessions() as session:
        contacts = await repo.contacts_of(session, account_id)
    out.contacts = [ContactOut.model_validate(c) for c in contacts]
    return out


@router.put("/{account_id}", response_model=AccountOut, dependencies=WRITE)
async def update_account(request: Request, account_id: str, body: AccountUpdate) -> AccountOut:
    """Set owner/stage/segment (and other traits); the change is published on accounts.v1."""
    if len(account_id) > 255:
        raise unprocessable(["path", "account_id"], "at most 255 characters")
    ctx = health_of(request)
    now = datetime.now(UTC)
    fields = body.model_dump(exclude_none=True)
    async with ctx.sessions() as session, session.begin():
        account = await session.get(Account, account_id)
        if account is None:
            account = new_account(account_id, now)
            account.first_seen = now.date()
            session.add(account)
        upserted = AccountUpserted(message_id=new_id(), **fields)
        changed = apply_traits(session, account, upserted, occurred_at=now, now=now)
        if changed:
            announce_upsert(session, account_id, changed)
        if "owner" in changed:
            await reassign(session, {account_id: changed["owner"]}, now)
        score = await session.get(Score, account_id)
    ctx.outbox.nudge()
    if changed:
        ctx.scheduler.nudge()
    return _out(account, score)


@router.get("/{account_id}/scores", response_model=list[ScorePoint], dependencies=READ)
async def score_history(
    request: Request, account_id: str, limit: int = Query(90, ge=1, le=3650)
) -> list[ScorePoint]:
    """One score per day it was computed, newest first."""
    await _account(request, account_id)
    async with health_of(request).sessions() as session:
        rows = await repo.score_history(session, account_id, limit)
        return [ScorePoint.model_validate(r) for r in rows]


@router.get("/{account_id}/metrics", response_model=MetricsOut, dependencies=READ)
async def account_metrics(
    request: Request,
    account_id: str,
    days: Annotated[int, Query(ge=1, le=730)] = 30,
    end: Annotated[IsoDate | None, Query(description="exclusive; default: day after as-of")] = None,
) -> MetricsOut:
    """Daily values of every configured metric (zeros where nothing happened)."""
    await _account(request, account_id)
    ctx = health_of(request)
    end = end or ctx.settings.today() + timedelta(days=1)
    start = end - timedelta(days=days)
    config = await ctx.store.metrics()
    async with ctx.sessions() as session:
        rows = await repo.load_rollups(session, start, end, [account_id], config.storage_keys)
    by_key = {(m, d): v for _, m, d, v in rows}
    all_days = [start + timedelta(days=i) for i in range(days)]
    series = [
        MetricSeries(
            metric=m.key,
            name=m.name,
            kind=m.kind,
            days=all_days,
            values=[by_key.get((m.stored_as(), d), 0.0) for d in all_days],
        )
        for m in config.metrics
    ]
    return MetricsOut(account_id=account_id, start=start, end=end, metrics=series)
