"""``/v1/suppressions``: addresses that must never be emailed."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, HTTPException, Query, Response

from services.notify import repository
from services.notify.routes.deps import AUTH_ERRORS, STRICT_QUERY, SessionsDep
from services.notify.schemas import SuppressionIn, SuppressionOut
from shared.auth import require_scope

router = APIRouter(
    prefix="/v1/suppressions",
    tags=["suppressions"],
    responses=AUTH_ERRORS,
    dependencies=STRICT_QUERY,
)


@router.get("", response_model=list[SuppressionOut], dependencies=[Depends(require_scope("read"))])
async def list_suppressions(
    sessions: SessionsDep,
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0, le=10_000_000),
    account_id: str | None = Query(
        default=None, max_length=255, description="only this account's contacts"
    ),
) -> list[SuppressionOut]:
    async with sessions() as session:
        rows = await repository.list_suppressions(
            session, limit=limit, offset=offset, account_id=account_id
        )
    return [SuppressionOut.model_validate(r) for r in rows]


@router.get(
    "/{email}",
    response_model=SuppressionOut,
    dependencies=[Depends(require_scope("read"))],
    responses={404: {"description": "not suppressed"}},
)
async def get_suppression(email: str, sessions: SessionsDep) -> SuppressionOut:
    async with sessions() as session:
        row = await repository.get_suppression(session, email)
    if row is None:
        raise HTTPException(404, detail=f"'{email}' is not suppressed")
    return SuppressionOut.model_validate(row)


@router.post(
    "",
    response_model=SuppressionOut,
    status_code=201,
    dependencies=[Depends(require_scope("write"))],
    responses={200: {"description": "already suppressed (unchanged)"}},
)
async def add_suppression(
    body: SuppressionIn, sessions: SessionsDep, response: Response
) -> SuppressionOut:
    async with sessions() as session, session.begin():
        created = await repository.add_suppression(
            session, {**body.model_dump(), "created_at": datetime.now(UTC)}
        )
        row = await repository.get_suppression(session, body.email)
    if not created:
        response.status_code = 200
    assert row is not None
    return SuppressionOut.model_validate(row)


@router.delete(
    "/{email}",
    status_code=204,
    dependencies=[Depends(require_scope("write"))],
    responses={404: {"description": "not suppressed"}},
)
async def remove_suppression(email: str, sessions: SessionsDep) -> Response:
    async with sessions() as session, session.begin():
        removed = await repository.remove_suppression(session, email)
    if not removed:
        raise HTTPException(404, detail=f"'{email}' is not suppressed")
    return Response(status_code=204)
