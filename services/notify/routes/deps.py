"""Shared route dependencies. Routes open their own transaction (``async with
sessions() as s, s.begin()``) so it is committed before the response goes out."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notify.settings import NotifySettings
from services.notify.worker import DeliveryWorker
from shared.service import runtime_of

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid token"},
    403: {"description": "the token lacks the scope"},
    400: {"description": "the body is not readable (not UTF-8 JSON)"},
}


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    return runtime_of(request).sessions


def _settings(request: Request) -> NotifySettings:
    settings: NotifySettings = request.app.state.settings
    return settings


def _worker(request: Request) -> DeliveryWorker:
    worker: DeliveryWorker = request.app.state.worker
    return worker


SessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(_sessions)]
SettingsDep = Annotated[NotifySettings, Depends(_settings)]
WorkerDep = Annotated[DeliveryWorker, Depends(_worker)]


def _query_names(dependant: Any) -> set[str]:
    names = {f.alias for f in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def reject_unknown_query(request: Request) -> None:
    """A query parameter the route does not know is a 422 naming it, not silently ignored
    (a typo in a filter would otherwise return everything). NUL characters, which
    PostgreSQL text cannot hold, are refused here too."""
    query = request.query_params.multi_items()
    if "\x00" in request.scope.get("path", "") or any("\x00" in k + v for k, v in query):
        raise HTTPException(
            422,
            detail=[{"loc": ["path"], "msg": "NUL characters are not allowed", "type": "value"}],
        )
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None or not request.query_params:
        return
    unknown = sorted(set(request.query_params) - _query_names(dependant))
    if unknown:
        raise HTTPException(
            422,
            detail=[
                {
                    "loc": ["query", name],
                    "msg": "unknown query parameter",
                    "type": "extra_forbidden",
                }
                for name in unknown
            ],
        )


STRICT_QUERY = [Depends(reject_unknown_query)]
