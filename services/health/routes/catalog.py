"""``GET /v1/metrics/catalog``: every event name with metrics of its own, with volumes."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from services.health import repository as repo
from services.health.context import health_of
from services.health.eventnames import OTHER, count_key, keys_of
from services.health.models import EventName
from services.health.routes import ERRORS, strict_request
from services.health.schemas import Catalog, CatalogMetric
from shared.auth import require_scope

router = APIRouter(
    prefix="/v1/metrics",
    tags=["config"],
    responses=ERRORS,
    dependencies=[Depends(strict_request)],
)
READ = [Depends(require_scope("read"))]
OTHER_NAME = "(other)"


@router.get("/catalog", response_model=Catalog, dependencies=READ)
async def catalog(request: Request) -> Catalog:
    """The event names usable as metrics (``kind: event_count`` / ``event_users`` with
    ``event: <name>`` in ``PUT /v1/config/metrics``): events over the last 30 and 90
    days, and the share of accounts active in the last 30 that used each. Most used first;
    names beyond ``HEALTH_MAX_EVENT_METRICS`` are counted together as ``(other)``."""
    ctx = health_of(request)
    end = ctx.settings.today() + timedelta(days=1)
    start_30, start_90 = end - timedelta(days=30), end - timedelta(days=90)
    async with ctx.sessions() as session:
        names = list((await session.execute(select(EventName.slug, EventName.name))).tuples())
        volumes = {
            m: rest for m, *rest in await repo.event_volumes(session, start_30, start_90, end)
        }
        active = await repo.active_account_count(session, start_30, end)
    entries = [(name, slug) for slug, name in names]
    if count_key(OTHER) in volumes:
        entries.append((OTHER_NAME, OTHER))
    items = []
    for name, slug in entries:
        count, users = keys_of(slug)
        v30, v90, accounts = volumes.get(count, (0.0, 0.0, 0))
        items.append(
            CatalogMetric(
                name=name,
                slug=slug,
                count_metric=count,
                users_metric=users,
                events_30d=v30,
                events_90d=v90,
                accounts_30d=int(accounts),
                share_of_accounts=round(accounts / active, 4) if active else 0.0,
            )
        )
    items.sort(key=lambda m: (-m.events_90d, -m.events_30d, m.name))
    return Catalog(
        as_of=ctx.settings.today(),
        cap=ctx.event_names.cap,
        registered=len(names),
        active_accounts_30d=active,
        metrics=items,
    )
