"""Shared route dependencies. Routes open their own transaction (``async with
sessions() as s, s.begin()``) so it is committed before the response goes out."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notify.settings import NotifySettings
from services.notify.worker import DeliveryWorker
from shared.http import strict_request
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


STRICT_QUERY = [Depends(strict_request)]
