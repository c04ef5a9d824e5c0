"""``/v1/config/*`` (admin to change) and ``POST /v1/recompute``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from services.health.config import MetricsConfig
from services.health.context import health_of
from services.health.routes import ERRORS, IsoDate, strict_request, unprocessable
from services.health.schemas import AlertBudget, RecomputeOut
from shared.auth import require_scope

router = APIRouter(
    prefix="/v1", tags=["config"], responses=ERRORS, dependencies=[Depends(strict_request)]
)
READ = [Depends(require_scope("read"))]
WRITE = [Depends(require_scope("write"))]
ADMIN = [Depends(require_scope("admin"))]


@router.get("/config/metrics", response_model=MetricsConfig, dependencies=READ)
async def get_metrics(request: Request) -> MetricsConfig:
    return await health_of(request).store.metrics()


@router.put("/config/metrics", response_model=MetricsConfig, dependencies=ADMIN)
async def put_metrics(request: Request, body: MetricsConfig) -> MetricsConfig:
    """Replace the metric definitions; new metrics roll up from events consumed from now on."""
    ctx = health_of(request)
    async with ctx.sessions() as session, session.begin():
        await ctx.store.set_metrics(session, body)
    return body


@router.get("/config/alerts", response_model=AlertBudget, dependencies=READ)
async def get_alert_budget(request: Request) -> AlertBudget:
    return AlertBudget(daily_budget_per_csm=await health_of(request).store.alert_budget())


@router.put("/config/alerts", response_model=AlertBudget, dependencies=ADMIN)
async def put_alert_budget(request: Request, body: AlertBudget) -> AlertBudget:
    ctx = health_of(request)
    async with ctx.sessions() as session, session.begin():
        await ctx.store.set_alert_budget(session, body.daily_budget_per_csm)
    return body


@router.post("/recompute", response_model=RecomputeOut, dependencies=WRITE)
async def recompute(request: Request, as_of: IsoDate | None = None) -> RecomputeOut:
    """Score every account now (also runs on a schedule and after consumed batches).

    ``as_of`` before today only fills that day's score history (no current scores, no
    alerts, nothing published); after today is refused.
    """
    ctx = health_of(request)
    today = ctx.settings.today()
    if as_of is not None and as_of > today:
        raise unprocessable(["query", "as_of"], f"must not be after today ({today})")
    result = await ctx.recomputer.recompute(None, as_of=as_of)
    return RecomputeOut(
        as_of=result.as_of,
        accounts=result.accounts,
        scores_changed=result.scores_changed,
        alerts=result.alerts,
    )
