"""Error answers the OpenAPI spec promises: 405 lists every method of the path in ``Allow``.

Starlette's 405 names only the methods of the first route on a path; a path served by
several routes (GET + POST here) would advertise too few.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route


def _flat_routes(routes: Iterable[Any]) -> Iterator[Route]:
    """Routes of the app, looking inside included routers (FastAPI wraps them)."""
    for route in routes:
        if isinstance(route, Route):
            yield route
        inner = getattr(getattr(route, "original_router", None), "routes", None)
        if inner is None:
            inner = getattr(route, "routes", None)
        if inner is not None and not isinstance(route, Route):
            yield from _flat_routes(inner)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        allowed: set[str] = set()
        for route in _flat_routes(request.app.router.routes):
            if route.methods:
                match, _ = route.matches(request.scope)
                if match in (Match.FULL, Match.PARTIAL):
                    allowed |= route.methods
        if allowed:
            exc = StarletteHTTPException(
                405, detail=exc.detail, headers={"Allow": ", ".join(sorted(allowed))}
            )
    return await http_exception_handler(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
