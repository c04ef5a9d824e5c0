"""``/v1/deliveries``: the delivery log, filtered by account, recipient, status, channel."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query

from services.notify import repository
from services.notify.routes.deps import AUTH_ERRORS, STRICT_QUERY, SessionsDep
from services.notify.schemas import DeliveryList, DeliveryOut
from shared.auth import require_scope

router = APIRouter(
    prefix="/v1/deliveries", tags=["deliveries"], responses=AUTH_ERRORS, dependencies=STRICT_QUERY
)
Status = Literal["queued", "sending", "retrying", "deferred", "sent", "failed", "suppressed"]


@router.get("", response_model=DeliveryList, dependencies=[Depends(require_scope("read"))])
async def list_deliveries(
    sessions: SessionsDep,
    account_id: str | None = Query(default=None, max_length=255),
    recipient: str | None = Query(default=None, max_length=320),
    status: Status | None = None,
    channel: Literal["email", "slack"] | None = None,
    idempotency_key: str | None = Query(default=None, max_length=300),
    task_group_id: str | None = Query(default=None, max_length=255),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0, le=10_000_000),
) -> DeliveryList:
    filters = {
        "account_id": account_id,
        "recipient": recipient,
        "status": status,
        "channel": channel,
        "idempotency_key": idempotency_key,
        "task_group_id": task_group_id,
    }
    async with sessions() as session:
        rows = await repository.list_deliveries(
            session, filters=filters, limit=limit, offset=offset
        )
    return DeliveryList(
        items=[DeliveryOut.model_validate(r) for r in rows], limit=limit, offset=offset
    )


@router.get(
    "/{delivery_id}",
    response_model=DeliveryOut,
    dependencies=[Depends(require_scope("read"))],
    responses={404: {"description": "no such delivery"}},
)
async def get_delivery(delivery_id: str, sessions: SessionsDep) -> DeliveryOut:
    async with sessions() as session:
        row = await repository.get_delivery(session, delivery_id)
    if row is None:
        raise HTTPException(404, detail=f"no delivery '{delivery_id}'")
    return DeliveryOut.model_validate(row)
