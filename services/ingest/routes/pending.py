"""``GET /v1/pending`` (admin): the users whose events are parked, waiting for an account."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from services.ingest import repository as repo
from services.ingest.accounts import AccountDirectory, DirectoryError
from shared.auth import require_scope
from shared.http import ERRORS, strict_request
from shared.responses import JSONBytes

router = APIRouter(
    prefix="/v1",
    tags=["pending"],
    responses={
        **ERRORS,
        503: {"description": "the ingest database did not answer; see Retry-After"},
    },
    dependencies=[Depends(strict_request), Depends(require_scope("admin"))],
)


class PendingUser(BaseModel):
    user_key: str  # u:<userId> or a:<anonymousId>
    events: int
    oldest_parked_at: datetime
    oldest_age_seconds: float


class PendingList(BaseModel):
    users: int
    events: int
    items: list[PendingUser]


@router.get(
    "/pending",
    response_model=PendingList,
    summary="Users with parked events (no account yet): counts and oldest age",
)
async def list_pending(
    request: Request,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=1_000_000_000),
) -> PendingList | JSONBytes:
    directory: AccountDirectory = request.app.state.directory

    async def read() -> tuple[list[tuple[str, int, datetime]], int, int]:
        async with directory.sessions() as session:
            return await repo.pending_users(session, limit=limit, offset=offset)

    try:
        rows, users, events = await directory.bounded(read(), "listing parked events")
    except DirectoryError:
        return JSONBytes(
            {"detail": "ingest database unavailable; retry later"},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    now = datetime.now(UTC)
    return PendingList(
        users=users,
        events=events,
        items=[
            PendingUser(
                user_key=key,
                events=count,
                oldest_parked_at=oldest,
                oldest_age_seconds=round((now - oldest).total_seconds(), 3),
            )
            for key, count, oldest in rows
        ],
    )
