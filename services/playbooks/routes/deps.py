"""What every route depends on: a session whose transaction commits on success, the clock."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth import TokenClaims, require_scope
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


class ErrorOut(BaseModel):
    detail: Any


Responses = dict[int | str, dict[str, Any]]
ERRORS: Responses = {
    400: {"model": ErrorOut, "description": "the body is not JSON"},
    401: {"model": ErrorOut, "description": "missing or invalid token"},
    403: {"model": ErrorOut, "description": "the token lacks the scope"},
    404: {"model": ErrorOut, "description": "not found"},
    409: {"model": ErrorOut, "description": "not in a state that allows it"},
}


def _iso_datetime(value: Any) -> Any:
    """An ISO 8601 date-time (pydantic alone would read ``0.5`` as an epoch); naive = UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}", value):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("must be an ISO 8601 date-time") from None
    else:
        raise ValueError("must be an ISO 8601 date-time")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


IsoDatetime = Annotated[datetime, BeforeValidator(_iso_datetime)]


def _query_names(dependant: Any) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def known_query_only(request: Request) -> None:
    """Refuse query parameters the route does not take (a typo should not pass silently),
    and repeats of the single-valued ones we have."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None:
        return
    names = [name for name, _ in request.query_params.multi_items()]
    unknown = sorted(set(names) - _query_names(dependant))
    repeated = sorted({n for n in names if names.count(n) > 1} - set(unknown))
    problems = [
        {"loc": ("query", name), "msg": "unknown query parameter", "type": "extra_forbidden"}
        for name in unknown
    ] + [
        {"loc": ("query", name), "msg": "given more than once", "type": "repeated"}
        for name in repeated
    ]
    if problems:
        raise RequestValidationError(problems)


def not_found(what: str, key: str) -> HTTPException:
    return HTTPException(404, detail=f"{what} {key!r} not found")


def conflict(detail: str) -> HTTPException:
    return HTTPException(409, detail=detail)


def field_error(loc: list[Any], msg: str) -> HTTPException:
    """A 422 shaped like FastAPI's own, naming the field."""
    return HTTPException(422, detail=[{"loc": loc, "msg": msg, "type": "value_error"}])
