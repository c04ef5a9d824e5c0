"""Error answers the OpenAPI spec promises: a 405 lists every method of the path in
``Allow`` (Starlette's names only the first route's, and our paths have several)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route


def _routes(routes: Iterable[Any]) -> Iterator[Route]:
    """Every route, looking inside included routers."""
    for route in routes:
        if isinstance(route, Route):
            yield route
            continue
        inner = getattr(getattr(route, "original_router", None), "routes", None)
        if inner is None:
            inner = getattr(route, "routes", None)
        if inner is not None:
            yield from _routes(inner)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        allowed: set[str] = set()
        for route in _routes(request.app.router.routes):
            match, _ = route.matches(request.scope)
            if route.methods and match in (Match.FULL, Match.PARTIAL):
                allowed |= route.methods
        if allowed:
            exc = StarletteHTTPException(
                405, detail=exc.detail, headers={"Allow": ", ".join(sorted(allowed))}
            )
    return await http_exception_handler(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
