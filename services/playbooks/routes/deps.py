"""What every route depends on: a session whose transaction commits on success, the clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any, Protocol

from fastapi import Depends, HTTPException, Request
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth import TokenClaims, require_scope
from shared.http import ERRORS as HTTP_ERRORS
from shared.http import ErrorOut as ErrorOut
from shared.http import IsoDatetime as IsoDatetime
from shared.http import field_error as field_error
from shared.http import strict_request as strict_request
from shared.service import runtime_of


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the route returns, rolled back if it raises."""
    async with runtime_of(request).sessions() as session, session.begin():
        yield session


def _now(request: Request) -> datetime:
    clock: Callable[[], datetime] = request.app.state.clock
    return clock()


# scope="function": the transaction commits before the response is sent, so a client
# that reads right after a write sees it.
SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]
NowDep = Annotated[datetime, Depends(_now)]
Read = Annotated[TokenClaims, Depends(require_scope("read"))]
Write = Annotated[TokenClaims, Depends(require_scope("write"))]
Admin = Annotated[TokenClaims, Depends(require_scope("admin"))]


Responses = dict[int | str, dict[str, Any]]
ERRORS: Responses = {
    **HTTP_ERRORS,
    404: {"model": ErrorOut, "description": "not found"},
    409: {"model": ErrorOut, "description": "not in a state that allows it"},
}


def not_found(what: str, key: str) -> HTTPException:
    return HTTPException(404, detail=f"{what} {key!r} not found")


def conflict(detail: str) -> HTTPException:
    return HTTPException(409, detail=detail)


class _CsmLike(Protocol):
    active: bool


def check_assignee(csm: _CsmLike | None) -> None:
    """An explicit assignee (manual start, reassign) must be an active CSM of the team:
    422 naming ``assignee`` otherwise. Capacity is not checked: a person chose them."""
    if csm is None:
        raise field_error(["body", "assignee"], "no CSM with this email (POST /v1/csms first)")
    if not csm.active:
        raise field_error(["body", "assignee"], "this CSM is inactive")
