"""``/v1/sparklines``: score history and open alerts for a page of accounts in one call.

A portfolio page shows fifty accounts with a 90-day trend each; fetching fifty score
histories one by one would make every page load fifty-one requests.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, Strict

from services.health import repository as repo
from services.health.context import health_of
from services.health.routes import ERRORS, strict_request
from services.health.schemas import Band
from shared.auth import require_scope

router = APIRouter(
    prefix="/v1/sparklines",
    tags=["accounts"],
    responses=ERRORS,
    dependencies=[Depends(strict_request)],
)


class SparklinesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_ids: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        min_length=1, max_length=200
    )
    days: Annotated[int, Strict()] = Field(default=90, ge=1, le=730)


class SparkPoint(BaseModel):
    day: date
    score: float
    band: Band


class Sparkline(BaseModel):
    account_id: str
    open_alerts: int
    scores: list[SparkPoint]


class Sparklines(BaseModel):
    start: date
    items: list[Sparkline]


@router.post(
    "",
    response_model=Sparklines,
    dependencies=[Depends(require_scope("read"))],
    summary="Score histories (oldest first) and open alert counts for up to 200 accounts",
    description="A read (POST only so that 200 ids fit in the body); unknown ids get none.",
)
async def sparklines(request: Request, body: SparklinesIn) -> Sparklines:
    ctx = health_of(request)
    ids = list(dict.fromkeys(body.account_ids))
    start = ctx.settings.today() - timedelta(days=body.days - 1)
    async with ctx.sessions() as session:
        history, counts = await repo.sparklines(session, ids, start)
    return Sparklines(
        start=start,
        items=[
            Sparkline(
                account_id=a,
                open_alerts=counts.get(a, 0),
                scores=[SparkPoint(day=h.day, score=h.score, band=h.band) for h in history[a]],
            )
            for a in ids
        ],
    )
