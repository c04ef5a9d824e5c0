"""The ingest app: tracking routes, the account directory, the releaser of parked events,
the rate limiter."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI

from services.ingest.accounts import AccountDirectory
from services.ingest.fastlane import TrackingFastLane
from services.ingest.pending import PendingReleaser
from services.ingest.ratelimit import RateLimiter
from services.ingest.routes import pending, tracking
from services.ingest.settings import IngestSettings
from shared.service import Component, ServiceRuntime, create_service_app

DESCRIPTION = """Segment-compatible tracking API. Authenticate with an `ingest`-scoped token as
`Authorization: Bearer <token>`, HTTP Basic (token as username, empty password) or a
`writeKey` field in the body. Bodies may be gzip-encoded; limits apply after decompression:
32 KB per event, 500 KB and 2,500 events per batch."""


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()

    async def on_start(runtime: ServiceRuntime) -> Sequence[Component]:
        app.state.directory = AccountDirectory(
            runtime.sessions,
            cache_size=settings.account_cache_size,
            timeout=settings.database_timeout_seconds,
        )
        runtime.publisher.timeout = settings.publish_timeout_seconds
        app.state.releaser = PendingReleaser(
            runtime.sessions,
            runtime.publisher,
            max_age=settings.pending_max_age,
            interval=settings.pending_sweep_interval,
            chunk=settings.pending_release_chunk,
        )
        return [app.state.releaser]

    app = create_service_app(
        name="ingest",
        title="Uptake ingest",
        description=DESCRIPTION,
        settings=settings,
        database_url=settings.database_url("ingest"),
        routers=[tracking.router, pending.router],
        on_start=on_start,
        auto_migrate=settings.auto_migrate,
        middleware=[TrackingFastLane],
    )
    app.state.rate_limiter = RateLimiter(
        rate=settings.rate_limit_events_per_second, burst=settings.rate_limit_burst
    )
    return app
