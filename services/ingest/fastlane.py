"""The tracking endpoints' fast lane: POSTs to ``/v1/<call>`` skip FastAPI's routing.

Routing, dependency resolution and request validation cost FastAPI about two thirds of
its throughput against a bare ASGI endpoint, and the tracking API does its own body
handling anyway (:mod:`services.ingest.routes.tracking`). This middleware sends those
POSTs straight to the same handler; the FastAPI routes stay for the OpenAPI spec, the
docs, and anything the lane does not take.
"""

from __future__ import annotations

from types import SimpleNamespace

from fastapi import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from services.ingest.routes.tracking import CALLS, ingest
from shared.responses import JSONBytes


class TrackingFastLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.paths = {f"/v1/{call}": forced for call, forced in CALLS.items()}
        self.routes = {path: SimpleNamespace(path=path) for path in self.paths}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.routes[scope["path"]]  # the metrics middleware's route label
        request = Request(scope, receive)
        try:
            response = await ingest(request, forced_type=self.paths[scope["path"]])
        except HTTPException as exc:
            response = JSONBytes({"detail": exc.detail}, exc.status_code, headers=exc.headers)
        await response(scope, receive, send)
