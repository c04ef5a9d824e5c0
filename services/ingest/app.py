"""The ingest app: tracking routes, the account directory, the releaser of parked events,
the rate limiter, the token registry (``/v1/tokens``, last uses, re-announcing
revocations) and the drain before a stop (:mod:`services.ingest.intake`)."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI

from services.ingest.accounts import AccountDirectory
from services.ingest.fastlane import TrackingFastLane
from services.ingest.intake import Intake
from services.ingest.pending import PendingReleaser
from services.ingest.routes import pending, tokens, tracking
from services.ingest.settings import IngestSettings
from services.ingest.token_upkeep import RevocationRepublisher, TokenUseReader, UsageFlusher
from shared.ratelimit import RateLimiter
from shared.service import Component, ServiceRuntime, create_service_app
from shared.tokenuse import UsageBuffer

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

        async def drain() -> None:
            """Refuse new calls, let those in hand answer, release what linked users
            still have parked: after this, all ingest accepted is on the broker or (for
            users without an account yet) in its database."""
            intake.close()
            await intake.idle()
            await app.state.releaser.flush()

        runtime.drain_hooks.append(drain)
        return [
            app.state.releaser,
            TokenUseReader(settings.kafka_bootstrap_servers, usage, client_id="ingest"),
            UsageFlusher(runtime.sessions, usage, interval=settings.token_usage_flush_interval),
            RevocationRepublisher(runtime.sessions, runtime.publisher, runtime.auth.revoked),
        ]

    app = create_service_app(
        name="ingest",
        title="Uptake ingest",
        description=DESCRIPTION,
        settings=settings,
        database_url=settings.database_url("ingest"),
        routers=[tracking.router, pending.router, tokens.router],
        on_start=on_start,
        auto_migrate=settings.auto_migrate,
        middleware=[TrackingFastLane],
    )
    # The registry is here: this service's authenticator notes each token's last use.
    app.state.auth.usage = usage = UsageBuffer()
    intake = app.state.intake = Intake()
    app.state.rate_limiter = RateLimiter(
        rate=settings.rate_limit_events_per_second, burst=settings.rate_limit_burst
    )
    return app
