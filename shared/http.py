"""What every service's REST API shares: error shapes and their OpenAPI entries, strict
ISO dates in queries, refusal of unknown query parameters, and a 405 that lists every
method of its path."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, BeforeValidator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route


class ErrorOut(BaseModel):
    detail: Any


Responses = dict[int | str, dict[str, Any]]
ERRORS: Responses = {
    400: {"model": ErrorOut, "description": "the body is not JSON"},
    401: {"model": ErrorOut, "description": "missing or invalid token"},
    403: {"model": ErrorOut, "description": "the token lacks the scope"},
}
NOT_FOUND: Responses = {404: {"model": ErrorOut, "description": "no such resource"}}
CONFLICT: Responses = {409: {"model": ErrorOut, "description": "conflicts with the current state"}}
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Dates outside these years mean a typo, and near year 1 or 9999 the day arithmetic
# behind windows and time zones overflows (a 500): refuse them with the field named.
MIN_YEAR, MAX_YEAR = 1900, 2999
_RANGE = f"must be between {MIN_YEAR}-01-01 and {MAX_YEAR}-12-31"


def _in_range(value: date) -> None:
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(_RANGE)


def _iso_date(value: Any) -> Any:
    """Only ``YYYY-MM-DD`` (pydantic alone would read ``0`` as 1970-01-01)."""
    if isinstance(value, date):
        parsed = value
    elif isinstance(value, str) and _ISO_DATE.match(value):
        try:
            parsed = date.fromisoformat(value)
        except ValueError:
            raise ValueError("must be a date as YYYY-MM-DD") from None
    else:
        raise ValueError("must be a date as YYYY-MM-DD")
    _in_range(parsed)
    return parsed


def _iso_datetime(value: Any) -> Any:
    """An ISO 8601 string (pydantic alone would read ``0.5`` as an epoch); naive = UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and _ISO_DATE.match(value[:10]):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("must be an ISO 8601 date-time") from None
    else:
        raise ValueError("must be an ISO 8601 date-time")
    _in_range(parsed)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


IsoDate = Annotated[date, BeforeValidator(_iso_date)]
IsoDatetime = Annotated[datetime, BeforeValidator(_iso_datetime)]


def field_error(loc: list[Any], msg: str) -> HTTPException:
    """A 422 shaped like FastAPI's own (``detail`` = list of {loc, msg, type})."""
    return HTTPException(422, detail=[{"loc": loc, "msg": msg, "type": "value_error"}])


def _query_names(dependant: Any) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _nul(*loc: str | int) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": loc, "msg": "NUL characters are not allowed", "type": "value_error"}]
    )


def _nul_path(value: Any) -> list[str | int] | None:
    """Where in a JSON document the first NUL character sits (a key or a string)."""
    if isinstance(value, str):
        return [] if "\x00" in value else None
    items: Iterable[tuple[str | int, Any]]
    if isinstance(value, dict):
        for key in value:
            if "\x00" in key:
                return [key]
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, child in items:
        inner = _nul_path(child)
        if inner is not None:
            return [key, *inner]
    return None


async def strict_request(request: Request) -> None:
    """Refuse what would otherwise pass silently or fail deep inside: query parameters the
    route does not take (a typo in a filter would return everything), repeats of
    single-valued ones, and NUL characters anywhere (PostgreSQL text cannot hold them)."""
    items = request.query_params.multi_items()
    if "\x00" in request.scope.get("path", "") or any("\x00" in k + v for k, v in items):
        raise _nul("query" if items else "path")
    if request.method in ("POST", "PUT", "PATCH"):
        body = await request.body()  # cached: the route reads the same bytes
        if b"\\u0000" in body or b"\x00" in body:
            try:
                path = _nul_path(orjson.loads(body)) or []
            except orjson.JSONDecodeError:
                path = []
            raise _nul("body", *path)
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None:
        return
    names = [name for name, _ in items]
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


def iter_routes(routes: Iterable[Any]) -> Iterator[Route]:
    """Every route, looking inside included routers."""
    for route in routes:
        if isinstance(route, Route):
            yield route
            continue
        inner = getattr(getattr(route, "original_router", None), "routes", None)
        if inner is None:
            inner = getattr(route, "routes", None)
        if inner is not None:
            yield from iter_routes(inner)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's 405 names only the first route's methods in ``Allow``; list them all."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        allowed: set[str] = set()
        for route in iter_routes(request.app.router.routes):
            match, _ = route.matches(request.scope)
            if route.methods and match in (Match.FULL, Match.PARTIAL):
                allowed |= route.methods
        if allowed:
            exc = StarletteHTTPException(
                405, detail=exc.detail, headers={"Allow": ", ".join(sorted(allowed))}
            )
    return await http_exception_handler(request, exc)


def _json_safe(value: Any) -> Any:
    """inf/nan (``1e400`` in a JSON body parses as inf) as text: JSON cannot hold them."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


async def _validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's 422, but one that echoes ``input: inf`` is still a 422, not a 500."""
    assert isinstance(exc, RequestValidationError)
    safe = RequestValidationError(_json_safe(list(exc.errors())), body=_json_safe(exc.body))
    return await request_validation_exception_handler(request, safe)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
