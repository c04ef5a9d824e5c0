"""``GET /v1/audit`` (admin): the service's audit trail, newest first, filtered and paged."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from shared.audit import list_entries
from shared.auth import require_scope
from shared.http import ERRORS, IsoDatetime, strict_request


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    subject: str
    token_id: str
    method: str
    path: str
    action: str
    route: str
    target: str | None
    status: int
    summary: dict[str, Any] | None


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    total: int
    limit: int
    offset: int


def audit_router() -> APIRouter:
    router = APIRouter(
        prefix="/v1",
        tags=["audit"],
        responses={
            **ERRORS,
            422: {"description": "a filter is malformed (since must be ISO 8601)"},
        },
        dependencies=[Depends(strict_request), Depends(require_scope("admin"))],
    )

    @router.get(
        "/audit",
        response_model=AuditPage,
        summary="Who did what, when, with what result: every write and admin action here",
    )
    async def list_audit(
        request: Request,
        since: Annotated[
            IsoDatetime | None, Query(description="only actions at or after this ISO time")
        ] = None,
        subject: Annotated[
            str | None, Query(min_length=1, max_length=255, description="the token's subject")
        ] = None,
        action: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=300,
                description="a route name (`replace_rule`) or `METHOD /template`",
            ),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> AuditPage:
        async with request.app.state.runtime.sessions() as session:
            rows, total = await list_entries(
                session, since=since, subject=subject, action=action, limit=limit, offset=offset
            )
        return AuditPage(
            items=[AuditEntryOut(**row) for row in rows], total=total, limit=limit, offset=offset
        )

    return router
