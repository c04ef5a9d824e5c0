"""The notify app: REST routes, the request consumer, the delivery worker."""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from fastapi import FastAPI

from services.notify.consumer import RequestConsumer
from services.notify.routes import deliveries, suppressions, templates, tracking
from services.notify.settings import NotifySettings
from services.notify.worker import Clock, DeliveryWorker, utcnow
from shared import topics
from shared.kafka import ConsumerRunner
from shared.service import Component, ServiceRuntime, create_service_app

log = structlog.get_logger(__name__)

DESCRIPTION = """Email and Slack delivery for Uptake. Consumes `notify.requests.v1`, sends each
request once (idempotency key), retries with backoff, honours a per-contact frequency cap
and the suppression list, and publishes outcomes and engagement on `notify.deliveries.v1`.
REST needs a token: `read` for GET, `write` for suppressions, `admin` for templates.
Unsubscribe and tracking links need none (they are signed)."""


def create_app(settings: NotifySettings | None = None, *, clock: Clock = utcnow) -> FastAPI:
    settings = settings or NotifySettings()

    async def on_start(runtime: ServiceRuntime) -> Sequence[Component]:
        if settings.environment != "development" and not settings.links_are_https:
            log.warning(
                "notify.public_base_url_not_https",
                public_base_url=settings.public_base_url,
                consequence="unsubscribe and tracking links are plain http; emails carry no "
                "List-Unsubscribe-Post (RFC 8058 one-click needs https): set PUBLIC_BASE_URL "
                "to the https address notify is reached at",
            )
        worker = DeliveryWorker(
            sessions=runtime.sessions,
            publisher=runtime.publisher,
            settings=settings,
            clock=clock,
        )
        app.state.worker = worker
        consumer = RequestConsumer(
            sessions=runtime.sessions, settings=settings, clock=clock, on_stored=worker.wake
        )
        runner = ConsumerRunner(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=settings.consumer_group,
            topics=list(topics.CONSUMED_BY["notify"]),
            handler=consumer.handle,
            publisher=runtime.publisher,
            max_batch=500,
            stall_seconds=settings.consumer_stall_seconds,
        )
        # The worker starts first and stops last: the consumer's final batch still gets sent.
        # Draining (``uptake run``) pauses it first: requests are still stored, not sent.
        runtime.drain_hooks.append(worker.pause)
        return [worker, runner]

    app = create_service_app(
        name="notify",
        title="Uptake notify",
        description=DESCRIPTION,
        settings=settings,
        database_url=settings.database_url("notify"),
        routers=[deliveries.router, templates.router, suppressions.router, tracking.router],
        on_start=on_start,
        auto_migrate=settings.auto_migrate,
    )
    return app
